"""LEV over its control: what the generator itself buys, beyond what comes with it.

Isoparametric v1 moves the input table's parameters into depth (2-9x the layers, 1.6-2.1x the
FLOPs per token); v2 unties the head. A multiplier against Dense mixes LEV with those. Each
control shares everything with Leviathan but LEV:
- `factorized` (isoparametric): an ordinary low-rank input table (V x r, r x D) with LEV's
  parameter count on Leviathan's backbone: same depth, same compute, no generator;
- `dense_untied` (decoupled): Dense with an untied head: untying without LEV;
- `factorized_wide` (isoparametric, not parameter-matched): the same table at the rank LEV's
  table can reach (min(D, h + d_seed)): LEV's structure beyond the rank of its table;
- `lev_codebooks` (isoparametric, not parameter-matched): LEV without its splines, e = W_r z:
  what the spline modes buy beyond the base-b codebook sharing.
The headline is the ratio of the two arms' effective sizes at the same size, in each basis:
X_eff,lev / X_eff,ctl, both read off the same Dense curve, so it says only which arm reached the
lower loss and by how much (equivalently, it is read from their loss difference ΔL): equal
losses give 1 whatever the arms' own parameter counts or FLOPs. (A ratio of the multipliers
X_eff / X would not: `dense_untied` is 1.3-1.6x Leviathan's size, so equal losses would read as
1.3-1.6x.) 1 means LEV buys nothing its control does not. Its interval comes from the same
bootstrap replicates as both effective sizes (one Dense refit and one seed-noise draw per
replicate), so the Dense curve's uncertainty largely cancels and the arms' noise does not. With
no run-to-run noise (one seed, no fit.seed_noise: analysis.readings.noise) it has no interval at
all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.inputs.runs import CONTROLS
from analysis.laws.bootstrap import percentile_interval
from analysis.readings.matchings import Matching

RATIO_COLUMNS = ["size", "control", "basis", "ratio", "ratio_lo", "ratio_hi", "lev_multiplier",
                 "control_multiplier", "interval", "extrapolated"]


def lev_vs_control(m: Matching, level: float) -> pd.DataFrame:
    """One row per (size, control arm, basis) where both effective sizes are defined: ratio =
    X_eff,lev / X_eff,ctl with its interval (and each arm's multiplier X_eff / X beside it)."""
    rows = []
    r = m.rows
    if r.empty:
        return pd.DataFrame(columns=RATIO_COLUMNS)
    for (basis, size), g in r.groupby(["basis", "size"], sort=False):
        lev = g[(g["arm"] == "leviathan") & (g["reason"] == "")]
        if lev.empty:
            continue
        for control in CONTROLS:
            ctl = g[(g["arm"] == control) & (g["reason"] == "")]
            if ctl.empty:
                continue
            x_lev, x_ctl = lev["x"].iloc[0], ctl["x"].iloc[0]  # draws are X_eff / x
            ratio = lev["n_eff"].iloc[0] / ctl["n_eff"].iloc[0]
            with np.errstate(all="ignore"):
                draws = (m.draws[(basis, "leviathan", size)] * x_lev) / (
                    m.draws[(basis, control, size)] * x_ctl)
            # without run-to-run noise both arms move together through the Dense curve: the
            # ratio's "interval" would claim far more than it holds, so there is none
            lo, hi = percentile_interval(draws, level) if m.interval != "fit" else (np.nan,
                                                                                  np.nan)
            rows.append({"size": size, "control": control, "basis": basis, "ratio": ratio,
                         "ratio_lo": float(lo), "ratio_hi": float(hi),
                         "lev_multiplier": lev["multiplier"].iloc[0],
                         "control_multiplier": ctl["multiplier"].iloc[0],
                         "interval": m.interval,
                         "extrapolated": bool(lev["extrapolated"].iloc[0]
                                              or ctl["extrapolated"].iloc[0])})
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)


POOLED_COLUMNS = ["control", "basis", "ratio", "ratio_lo", "ratio_hi", "n_sizes", "sizes",
                  "interval"]


def pooled_vs_control(m: Matching, ratios: pd.DataFrame, level: float) -> pd.DataFrame:
    """LEV over its control pooled across sizes: the geometric mean of the per-size ratios (one
    row per control arm and basis), its interval from the same replicates (each replicate's
    geometric mean over the sizes: one Dense refit and one noise draw each), so a question
    asked of every size is answered about sqrt(sizes) more tightly than by any one size. No
    interval without run-to-run noise (as per size)."""
    rows = []
    if ratios is None or ratios.empty:
        return pd.DataFrame(columns=POOLED_COLUMNS)
    for (control, basis), g in ratios.groupby(["control", "basis"], sort=False):
        logs = []
        for size in g["size"]:
            lev = m.rows[(m.rows["arm"] == "leviathan") & (m.rows["size"] == size)
                         & (m.rows["basis"] == basis)]["x"].iloc[0]
            ctl = m.rows[(m.rows["arm"] == control) & (m.rows["size"] == size)
                         & (m.rows["basis"] == basis)]["x"].iloc[0]
            with np.errstate(all="ignore"):
                logs.append(np.log(m.draws[(basis, "leviathan", size)] * lev)
                            - np.log(m.draws[(basis, control, size)] * ctl))
        with np.errstate(all="ignore"):
            draws = np.exp(np.mean(logs, axis=0))  # NaN where any size's draw is undefined
        lo, hi = percentile_interval(draws, level) if m.interval != "fit" else (np.nan, np.nan)
        rows.append({"control": control, "basis": basis,
                     "ratio": float(np.exp(np.log(g["ratio"]).mean())), "ratio_lo": float(lo),
                     "ratio_hi": float(hi), "n_sizes": len(g), "sizes": ", ".join(g["size"]),
                     "interval": m.interval})
    return pd.DataFrame(rows, columns=POOLED_COLUMNS)
