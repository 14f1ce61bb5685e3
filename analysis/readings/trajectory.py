"""The multiplier as a function of tokens seen, from the validation losses logged in training.

A checkpoint in the middle of a cosine (or the stable phase of a WSD) schedule is not a trained
model of that token count. When the history marks cooled-down points (column `cooled`: the end
of a WSD cooldown branch), only those are used, and a family with cooldown branches fits only
its cooled-down runs; otherwise every validation point is used and the report says so.

A lineage is one (arm, size, seed, lr): a main run and its cooldown branches, whose cooled
points together make one curve. At every token count t where a Leviathan lineage has a point,
each Dense lineage of the ladder that reaches t gives its loss at t (linear interpolation in
log tokens between its points); L(N) is refitted on those losses (b fixed) and the Leviathan
loss at t gives N_eff(t) and the multiplier N_eff(t) / N_lev, marked `extrapolated` (with the
factor, `extrapolation`) where N_eff(t) lies outside the Dense sizes that reach t.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.laws.extrapolation import factor, outside
from analysis.laws.powerlaw import ALPHA_BOUNDS, FitError, effective_size, fit_power_law

COLUMNS = ["run_id", "lineage", "size", "params", "tokens", "loss", "n_dense", "n_dense_max",
           "n_eff", "multiplier", "extrapolated", "extrapolation"]
UNCOOLED = ("not a cooled-down point: this family has WSD cooldown branches (cooled) and the "
            "fits use only those")


def marks_cooled(history: pd.DataFrame | None) -> bool:
    return history is not None and "cooled" in history and bool((history["cooled"] == 1).any())


def curve_points(history: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """(points, 'cooled' | 'all'): the cooled-down points when the history marks any."""
    if history is None or history.empty:
        return pd.DataFrame(columns=["run_id", "tokens", "loss"]), "none"
    if marks_cooled(history):
        return history[history["cooled"] == 1], "cooled"
    return history, "all"


def uncooled(table: pd.DataFrame) -> tuple[list[str], pd.Series]:
    """In each family with cooled-down runs (`cooled` = 1) among its usable runs (`reason` ''),
    the other usable runs, left out (WSD main runs: their final loss is mid-schedule): (the
    families affected, run_id -> UNCOOLED)."""
    hit, out = [], {}
    for fam, g in table[table["reason"] == ""].groupby("family"):
        if (g["cooled"] == 1).any():
            out.update(dict.fromkeys(g.loc[g["cooled"] != 1, "run_id"], UNCOOLED))
            hit.append(fam)
    return hit, pd.Series(out, dtype=object)


def lineage_of(runs: pd.DataFrame, merge: bool = True) -> pd.Series:
    """run_id -> 'arm size s<seed> lr<lr>' (a main run and its cooldown branches share it);
    merge=False: every run is its own curve (separate runs of a cosine grid are no lineage)."""
    if not merge:
        return pd.Series(runs["run_id"].to_numpy(), index=runs["run_id"].to_numpy())
    lr = runs["lr"].map(lambda v: f" lr{v:.3g}" if np.isfinite(v) else "")
    seed = runs["seed"].map(lambda s: f" s{s}" if s else "")
    return pd.Series((runs["arm"] + " " + runs["size"] + seed + lr).to_numpy(),
                     index=runs["run_id"].to_numpy())


def loss_at(history: pd.DataFrame, tokens: float) -> float:
    """A curve's validation loss at `tokens` (log-linear interpolation; NaN outside its range)."""
    h = history[["tokens", "loss"]].dropna().sort_values("tokens")
    t = h["tokens"].to_numpy(float)
    if t.size == 0 or tokens < t[0] * (1 - 1e-9) or tokens > t[-1] * (1 + 1e-9) or tokens <= 0:
        return float("nan")
    if t.size == 1 or t[0] <= 0:
        return float(h["loss"].to_numpy()[np.argmin(np.abs(t - tokens))])
    return float(np.interp(np.log(tokens), np.log(np.maximum(t, 1e-300)), h["loss"].to_numpy()))


def _dense_fit_at(t: float, dense_lin: dict, n_of: pd.Series, b: float, delta: float):
    """(L(N) fit, Dense curves used, smallest and largest Dense N used) at token count t from
    the Dense lineages that reach it (b fixed); None with fewer than two sizes, a failed fit or a
    degenerate exponent."""
    pairs = [(n_of[k], loss_at(dh, t)) for k, dh in dense_lin.items()]
    pairs = [(n, lo) for n, lo in pairs if np.isfinite(lo) and lo > b]
    if len({n for n, _ in pairs}) < 2:
        return None
    try:
        fit = fit_power_law([p[0] for p in pairs], [p[1] for p in pairs], b=b, delta=delta)
    except FitError:
        return None
    if ALPHA_BOUNDS[0] * 10 < fit.alpha < ALPHA_BOUNDS[1] * 0.99:
        return fit, len(pairs), min(p[0] for p in pairs), max(p[0] for p in pairs)
    return None  # degenerate: no N_eff at t


def _usable_point(t: float, loss: float) -> bool:
    return bool(np.isfinite(t) and t > 0 and np.isfinite(loss))


def multiplier_vs_tokens(points: pd.DataFrame, dense: pd.DataFrame, lev: pd.DataFrame,
                         b: float, delta: float, merge: bool = False) -> pd.DataFrame | None:
    """One row per (Leviathan lineage, point) with N_eff(t); None without enough curves.

    points: history rows (run_id, tokens, loss) to use; dense: the Dense runs whose curves
    count; lev: the Leviathan runs whose curves count; merge: join each lineage's runs (cooled
    points of cooldown branches) into one curve.
    """
    if points is None or points.empty:
        return None
    runs = pd.concat([dense, lev], ignore_index=True).drop_duplicates("run_id")
    lineage = lineage_of(runs, merge)
    pts = points[points["run_id"].isin(runs["run_id"])].assign(
        lineage=lambda d: d["run_id"].map(lineage))
    n_of = runs.groupby(runs["run_id"].map(lineage))["params"].mean()
    size_of = runs.groupby(runs["run_id"].map(lineage))["size"].first()
    dense_lin = {k: g for k, g in pts[pts["run_id"].isin(dense["run_id"])].groupby("lineage")}
    if len({n_of[k] for k in dense_lin}) < 2:
        return None
    fits: dict[float, object] = {}
    rows = []
    for lin, h in pts[pts["run_id"].isin(lev["run_id"])].groupby("lineage", sort=False):
        for rid, t, loss in h.sort_values("tokens")[["run_id", "tokens", "loss"]].itertuples(
                index=False):
            if not _usable_point(t, loss):
                continue
            key = float(t)
            if key not in fits:
                fits[key] = _dense_fit_at(t, dense_lin, n_of, b, delta)
            if fits[key] is None:
                continue
            fit, n_dense, lo, hi = fits[key]
            n_eff, mult = effective_size(fit, loss, n_of[lin])
            far = float(factor(n_eff, lo, hi))
            rows.append((rid, lin, size_of[lin], n_of[lin], key, float(loss), n_dense, hi,
                         float(n_eff), float(mult), bool(outside(far)), far))
    if not rows:
        return None
    return pd.DataFrame(rows, columns=COLUMNS)
