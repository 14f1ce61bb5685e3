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
                  "interval", "homogeneous", "q_p"]
TREND_COLUMNS = ["quantity", "arm", "basis", "slope", "slope_lo", "slope_hi", "q", "q_df", "q_p",
                 "homogeneous", "n_sizes", "largest", "at_largest", "at_largest_lo",
                 "at_largest_hi"]
HOMOGENEITY_P = 0.05  # a pooled number is the headline only when homogeneity holds at this


def trend(values: list[float], draws: list[np.ndarray], n: list[float], level: float) -> dict:
    """How a per-size number (LEV over its control, a multiplier) moves with size, from its
    per-size point values, their bootstrap replicates (one (R,) array per size, the same
    replicates across sizes: one Dense refit and one noise draw each) and the sizes' N:
    the slope of ln(value) on ln N with its interval from the replicates' own slopes, and a
    test that the value is one number across sizes: Q = (y - mu)' C^-1 (y - mu), y the per-size
    log values, C their covariance over the replicates (the sizes share the Dense curve, so
    they are not independent: Cochran's Q with the bootstrap's covariance), mu its GLS mean; Q
    against chi-square on sizes - 1 degrees of freedom."""
    from scipy.special import chdtrc

    y = np.log(np.asarray(values, float))
    x = np.log(np.asarray(n, float))
    reps = np.log(np.column_stack(draws))  # (R, S)
    reps = reps[np.isfinite(reps).all(axis=1)]
    xc = x - x.mean()
    slope = float(xc @ (y - y.mean()) / (xc @ xc))
    lo, hi = percentile_interval((reps - reps.mean(1, keepdims=True)) @ xc / (xc @ xc), level)
    out = {"slope": slope, "slope_lo": float(lo), "slope_hi": float(hi), "q": np.nan,
           "q_df": len(y) - 1, "q_p": np.nan, "n_sizes": len(y)}
    if len(y) >= 2 and len(reps) > 2 * len(y):
        cov = np.cov(reps, rowvar=False)
        w = np.linalg.pinv(cov)
        one = np.ones(len(y))
        mu = float(one @ w @ y / (one @ w @ one))
        q = float((y - mu) @ w @ (y - mu))
        out.update(q=q, q_p=float(chdtrc(len(y) - 1, q)))
    return out


def trends(m: Matching, ratios: pd.DataFrame, level: float) -> pd.DataFrame:
    """TREND_COLUMNS, one row per LEV-over-control (control, basis) and per multiplier (arm,
    basis) with values at two or more sizes and run-to-run noise in their intervals (without
    it there is no interval, so no test either)."""
    rows = []
    if m.interval == "fit" or m.rows.empty:
        return pd.DataFrame(columns=TREND_COLUMNS)
    ok = m.rows[m.rows["reason"] == ""]
    for (basis, arm), g in ok.groupby(["basis", "arm"], sort=False):
        g = g.sort_values("params")
        if len(g) >= 2:
            rows.append(_trend_row("multiplier", arm, basis, g["size"].tolist(),
                                   g["multiplier"].tolist(),
                                   [m.draws[(basis, arm, s)] for s in g["size"]],
                                   g["params"].tolist(), level))
    for (control, basis), g in (ratios.groupby(["control", "basis"], sort=False)
                                if ratios is not None and len(ratios) else ()):
        sizes = [s for s in _by_params(m, basis, g["size"])]
        if len(sizes) < 2:
            continue
        draws, n = [], []
        for s in sizes:
            lev, ctl = (m.rows[(m.rows["arm"] == a) & (m.rows["size"] == s)
                               & (m.rows["basis"] == basis)].iloc[0]
                        for a in ("leviathan", control))
            with np.errstate(all="ignore"):
                draws.append(m.draws[(basis, "leviathan", s)] * lev["x"]
                             / (m.draws[(basis, control, s)] * ctl["x"]))
            n.append(lev["params"])
        values = [float(g.loc[g["size"] == s, "ratio"].iloc[0]) for s in sizes]
        rows.append(_trend_row("lev_over_control", control, basis, sizes, values, draws, n,
                               level))
    return pd.DataFrame(rows, columns=TREND_COLUMNS)


def _by_params(m: Matching, basis: str, sizes) -> list[str]:
    lev = m.rows[(m.rows["arm"] == "leviathan") & (m.rows["basis"] == basis)]
    order = lev.set_index("size")["params"]
    return sorted((s for s in sizes if s in order.index), key=lambda s: order[s])


def _trend_row(quantity, arm, basis, sizes, values, draws, n, level) -> dict:
    t = trend(values, draws, n, level)
    lo, hi = percentile_interval(draws[-1], level)
    return {"quantity": quantity, "arm": arm, "basis": basis, **t,
            "homogeneous": bool(not (t["q_p"] < HOMOGENEITY_P)), "largest": sizes[-1],
            "at_largest": values[-1], "at_largest_lo": float(lo), "at_largest_hi": float(hi)}


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
        t = trend(list(g["ratio"]), [np.exp(v) for v in logs],
                  [float(m.rows[(m.rows["arm"] == "leviathan") & (m.rows["size"] == s)
                                & (m.rows["basis"] == basis)]["params"].iloc[0])
                   for s in g["size"]], level) if m.interval != "fit" and len(g) >= 2 else {}
        rows.append({"control": control, "basis": basis,
                     "ratio": float(np.exp(np.log(g["ratio"]).mean())), "ratio_lo": float(lo),
                     "ratio_hi": float(hi), "n_sizes": len(g), "sizes": ", ".join(g["size"]),
                     "interval": m.interval,
                     "homogeneous": bool(not (t.get("q_p", np.nan) < HOMOGENEITY_P)),
                     "q_p": t.get("q_p", np.nan)})
    return pd.DataFrame(rows, columns=POOLED_COLUMNS)
