"""Data scaling: L(D) per (arm, size) where a size has several token budgets (D_eff / D for
Leviathan against Dense of the same size), and the joint L(N, D) where sizes and budgets both
vary (Epoch AI's procedure, analysis/joint.py), which gives each run a second N_eff at its own D.
"""

from __future__ import annotations

import pandas as pd

from analysis.family import FamilyResult, FitConfig
from analysis.joint import HUBER_DELTA as EPOCH_DELTA
from analysis.joint import bootstrap_joint, fit_joint
from analysis.paper_view import bootstrap_dense, interval_bounds
from analysis.powerlaw import B_DEFAULT, FitError, fit_power_law
from analysis.runs import budget_ids


def fit_ld(res: FamilyResult, usable: pd.DataFrame, cfg: FitConfig, rng):
    """L(D) per (arm, size) with several budgets; D_eff / D for Leviathan at the same size."""
    b = cfg.b if cfg.b is not None else B_DEFAULT
    dm = []
    if cfg.b is not None:
        usable = usable[usable["loss"] > cfg.b]
    for (arm, size), g in usable.groupby(["arm", "size"]):
        if budget_ids(g["tokens"].to_numpy(), cfg.budget_tol).max() < 1:
            continue
        try:
            f = fit_power_law(g["tokens"], g["loss"], b=cfg.b, delta=cfg.delta)
        except FitError as err:
            res.notes.append(f"L(D) {arm} {size}: {err}")
            continue
        s = bootstrap_dense(g, f, cfg, rng, x="tokens",
                             groups=budget_ids(g["tokens"].to_numpy(), cfg.budget_tol))
        res.data_fits.append({"arm": arm, "size": size, "B": f.A, "beta": f.alpha, "b": f.b,
                              "n_points": f.n_points, "B_ci": interval_bounds(s[:, 0], cfg.level),
                              "beta_ci": interval_bounds(s[:, 1], cfg.level)})
        if arm == "dense":
            lev = usable[(usable["arm"] == "leviathan") & (usable["size"] == size)]
            d_eff = f.inverse(lev["loss"])
            dm.append(pd.DataFrame({"run_id": lev["run_id"], "size": size,
                                    "tokens": lev["tokens"], "loss": lev["loss"],
                                    "d_eff": d_eff, "data_multiplier": d_eff / lev["tokens"]}))
    if cfg.b is None and res.data_fits:
        res.notes.append(f"L(D) fits use a fitted b per curve (b free); default would be {b}")
    if dm:
        res.data_multipliers = pd.concat(dm, ignore_index=True)


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
