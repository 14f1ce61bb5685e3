"""Data scaling: L(D) = E_N + B·D^-beta (E_N free) per (arm, size) where a size has several token
budgets, the data multipliers D_eff / D of the non-Dense runs
(analysis/readings/data_multipliers.py), and the joint L(N, D) where sizes and budgets both vary
(Epoch AI's procedure, analysis/laws/joint.py), which gives each run a second N_eff at its own D.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.family import FamilyResult, FitConfig
from analysis.inputs.runs import budget_ids
from analysis.laws.bootstrap import interval_bounds, resample_counts
from analysis.laws.extrapolation import factor, outside
from analysis.laws.joint import HUBER_DELTA as EPOCH_DELTA
from analysis.laws.joint import bootstrap_joint, fit_joint
from analysis.laws.powerlaw import FitError
from analysis.readings.data_multipliers import (
    PER_SIZE,
    data_multipliers,
    fit_size_ld,
    refit_size_ld,
)


def fit_ld(res: FamilyResult, usable: pd.DataFrame, cfg: FitConfig, rng):
    """L(D) = E_N + B·D^-beta with E_N free per (arm, size) with three or more budgets (the
    asymptote of one size is E + A·N^-alpha, not E: b is never pinned here), intervals from the
    budgets resampled; then the data multiplier D_eff / D of every non-Dense run
    (analysis/readings/data_multipliers.py: off the joint law when fitted, else off its size's
    L(D))."""
    for (arm, size), g in usable.groupby(["arm", "size"]):
        ids = budget_ids(g["tokens"].to_numpy(), cfg.budget_tol)
        if ids.max() < 1:
            continue
        if ids.max() < 2:
            res.notes.append(f"L(D) {arm} {size}: E_N free needs three or more token budgets; "
                             f"found {ids.max() + 1}")
            continue
        try:
            f = fit_size_ld(g, cfg.delta)
        except FitError as err:
            res.notes.append(f"L(D) {arm} {size}: {err}")
            continue
        counts = resample_counts(ids, cfg.bootstrap, rng).astype(float)
        s = refit_size_ld(g["tokens"], np.log(g["loss"].to_numpy(float)), counts, f, cfg.delta)
        res.data_fits.append({"arm": arm, "size": size, "law": PER_SIZE, "B": f.A,
                              "beta": f.alpha, "E_N": f.b, "b": f.b, "n_points": f.n_points,
                              "B_ci": interval_bounds(s[:, 0], cfg.level),
                              "beta_ci": interval_bounds(s[:, 1], cfg.level),
                              "E_N_ci": interval_bounds(s[:, 2], cfg.level),
                              "b_ci": interval_bounds(s[:, 2], cfg.level)})
    res.data_multipliers = data_multipliers(res, usable, cfg, rng)


def fit_joint_law(res: FamilyResult, dense: pd.DataFrame, cfg: FitConfig) -> None:
    """The joint L(N, D) on every Dense run (Epoch's Huber delta, 1e-3), and each Leviathan
    run's N_eff from it at the run's own D."""
    if dense["params"].nunique() < 2 or len(dense) < 6:
        return
    try:
        res.joint = fit_joint(dense["params"], dense["tokens"], dense["loss"], delta=EPOCH_DELTA)
        boot = bootstrap_joint(dense["params"], dense["tokens"], dense["loss"], res.joint,
                               n_rep=min(cfg.bootstrap, 400), seed=cfg.seed, delta=EPOCH_DELTA)
        res.intervals.update({f"joint_{k}": [v["lo"], v["hi"]] for k, v in boot.items()})
    except ValueError as err:
        res.notes.append(f"joint L(N, D): {err}")
        return
    if res.multipliers is not None and len(res.multipliers):
        m = res.multipliers  # second estimate: N_eff from the joint law at the run's own D
        m["n_eff_joint"] = res.joint.effective_params(m["loss"], m["tokens"])
        m["multiplier_joint"] = m["n_eff_joint"] / m["params"]
        # outside the Dense points in N (N_eff) or in D (the run's own tokens): the larger factor
        far = np.fmax(factor(m["n_eff_joint"], dense["params"].min(), dense["params"].max()),
                      factor(m["tokens"], dense["tokens"].min(), dense["tokens"].max()))
        m["extrapolation_joint"] = np.where(np.isfinite(m["n_eff_joint"]), far, np.nan)
        m["extrapolated_joint"] = outside(m["extrapolation_joint"])
