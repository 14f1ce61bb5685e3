"""Token multiplier: how many tokens an arm needs to reach Dense's final loss at the same size.

At each size, Dense's target is the mean final validation loss of its ladder runs (over seeds)
after T_D tokens. Each arm's curve is the mean over its seeds' validation curves (cooled-down
points only when the history marks them, analysis/readings/trajectory.py), on the token counts all
seeds cover; t* is where it first reaches the target (log-linear between the two points around it),
and the ratio T_D / t* says how many times fewer tokens the arm needs (v2's claim: 2.1x at 1.2B).
The interval resamples seeds of both arms (Dense final losses, the arm's curves); with one seed per
arm there is no run-to-run noise to resample and no interval is given.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.laws.bootstrap import percentile_interval
from analysis.readings.trajectory import lineage_of

COLUMNS = ["arm", "size", "dense_tokens", "dense_loss", "tokens_needed", "token_ratio",
           "token_ratio_lo", "token_ratio_hi", "n_dense", "n_arm", "points", "reason"]
MAX_REPLICATES = 500


def crossing(tokens: np.ndarray, loss: np.ndarray, target) -> np.ndarray:
    """(R,) first token count where each curve (R, G) reaches target (R,); NaN where it never
    does or already starts below it (t* not inside the curve)."""
    loss = np.atleast_2d(loss)
    target = np.broadcast_to(np.asarray(target, float), loss.shape[:1])
    below = loss <= target[:, None]
    j = np.argmax(below, axis=1)
    ok = below.any(axis=1) & (j > 0)
    j = np.where(ok, j, 1)
    rows = np.arange(loss.shape[0])
    l0, l1 = loss[rows, j - 1], loss[rows, j]
    lt0, lt1 = np.log(tokens[j - 1]), np.log(tokens[j])
    with np.errstate(all="ignore"):
        frac = np.where(l0 > l1, (l0 - target) / (l0 - l1), 0.0)
    return np.where(ok, np.exp(lt0 + frac * (lt1 - lt0)), np.nan)


def _curves(points: pd.DataFrame, runs: pd.DataFrame, merge: bool):
    """(grid (G,), curves (K, G)): each lineage's curve on the token counts all of them cover."""
    lin = lineage_of(runs, merge)
    pts = points[points["run_id"].isin(runs["run_id"])].dropna(subset=["tokens", "loss"])
    pts = pts[pts["tokens"] > 0].assign(lineage=lambda d: d["run_id"].map(lin))
    per = [g.groupby("tokens")["loss"].mean().sort_index() for _, g in pts.groupby("lineage")]
    per = [c for c in per if len(c) >= 2]
    if not per:
        return None, None
    lo, hi = max(c.index[0] for c in per), min(c.index[-1] for c in per)
    grid = np.unique(np.concatenate([c.index.to_numpy(float) for c in per]))
    grid = grid[(grid >= lo * (1 - 1e-9)) & (grid <= hi * (1 + 1e-9))]
    if grid.size < 2:
        return None, None
    curves = np.stack([np.interp(np.log(grid), np.log(c.index.to_numpy(float)), c.to_numpy())
                       for c in per])
    return grid, curves


def token_multipliers(points: pd.DataFrame, mode: str, ladder: pd.DataFrame,
                      arms: pd.DataFrame, cfg, rng) -> pd.DataFrame | None:
    """One row per (non-Dense arm, size) with a curve; None without histories.

    points: history rows to use (curve_points); mode: 'cooled' | 'all'; ladder: the Dense
    ladder runs (final losses); arms: the non-Dense runs whose curves count (with cooled
    points, every budget: a lineage's cooldown branches make one curve).
    """
    if points is None or points.empty:
        return None
    rows = []
    for (arm, size), runs in arms.groupby(["arm", "size"], sort=False):
        dense = ladder[ladder["size"] == size]
        if dense.empty:
            continue
        target, t_dense = float(dense["loss"].mean()), float(dense["tokens"].mean())
        grid, curves = _curves(points, runs, mode == "cooled")
        row = {"arm": arm, "size": size, "dense_tokens": t_dense, "dense_loss": target,
               "tokens_needed": math.nan, "token_ratio": math.nan,
               "token_ratio_lo": math.nan, "token_ratio_hi": math.nan,
               "n_dense": len(dense), "n_arm": 0 if curves is None else len(curves),
               "points": mode, "reason": ""}
        if curves is None:
            row["reason"] = "no validation curve with two or more points"
            rows.append(row)
            continue
        mean = curves.mean(axis=0)
        t_star = float(crossing(grid, mean, target)[0])
        if not np.isfinite(t_star):
            row["reason"] = (f"the curve starts below Dense's loss {target:.4f} (t* < "
                             f"{grid[0]:.3g})" if mean[0] <= target else
                             f"does not reach Dense's loss {target:.4f} by {grid[-1]:.3g} "
                             f"tokens (best {mean.min():.4f})")
            rows.append(row)
            continue
        row["tokens_needed"], row["token_ratio"] = t_star, t_dense / t_star
        if len(dense) >= 2 or len(curves) >= 2:
            n_rep = min(cfg.bootstrap, MAX_REPLICATES)
            d = dense["loss"].to_numpy(float)
            tgt = d[rng.integers(0, d.size, (n_rep, d.size))].mean(axis=1)
            pick = rng.integers(0, len(curves), (n_rep, len(curves)))
            ratio = t_dense / crossing(grid, curves[pick].mean(axis=1), tgt)
            lo, hi = percentile_interval(ratio, cfg.level)
            row["token_ratio_lo"], row["token_ratio_hi"] = float(lo), float(hi)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS) if rows else None
