"""Learning-rate sweeps: each arm gets its own best learning rate before anything is fitted.

Runs that differ only in `lr` and `seed` (same family, arm, size and token budget) are one sweep
point. The same rule for every arm (`fit.lr_estimator`):
- `mean` (default): the LR with the lowest mean final loss over the point's seeds, and every
  seed keeps its run at that LR (so the seeds' scatter, the run-to-run noise, is measured at one
  LR, not from minima taken at different LRs). Picking the best of k LRs per seed instead biases
  each kept loss down by up to ~0.85 sigma, more for a flat LR curve than for a sharp one, so
  the two arms would be biased differently; on the seed mean the bias shrinks as 1/sqrt(seeds)
  (and the simulations of analysis.power.simulate keep the intervals' coverage; choosing each seed
  on the other seeds' mean removes the bias but doubles the spread there).
- `pooled`: the LR of each (arm, size) chosen on the arm's *other* sizes: the seed means of
  every other size swept with the same LR multipliers, each centred on its own mean over the
  LRs, summed (leave one size out; the LR rule transfers the optimum across sizes, so the other
  sizes say where this one's is). No kept loss took part in choosing its own LR, so a flat LR
  curve has no winner's curse (at any number of seeds, one included), and a choice made on five
  sizes' runs is rarely wrong where the curve is sharp. What it does not do is tune each size on
  its own: where the true optimum moves between sizes by more than the sweep's step, `mean`
  follows it and `pooled` does not (the power analysis shows the cost: grid.power.lr_spread).
  A point whose LR multipliers no other size shares falls back to `mean`.
- `vertex`: the loss at the optimum is read from a quadratic in log LR fitted to the seed means,
  one curvature per (family, arm) pooled across its sizes (each size its own level and slope),
  its vertex kept inside the swept range; each seed keeps its run nearest the vertex, its loss
  moved by the quadratic's difference between the two (the seeds' scatter is kept).
A diverged run (loss NaN) still counts as tried, and its LR's mean as infinite.

The edge warning (`edge`, the same for every rule; `edge_readings`). A winner at the lowest or
highest LR swept says little: with the optimum within +-0.5 octave of the rule and [0.5, 1, 2]
swept, some chosen LR sat at an edge in 93-100% of simulated ladders. So the curve decides: per
(family, arm), wherever one of its points has three or more LRs, ln loss is fitted by least
squares over the runs as c_p + b_p u + a u^2 (u = log2 LR), each point p its own level and
slope and the arm one curvature a (taken as common to the arm's sizes, as `vertex` takes it:
a point with many seeds fits mostly its own, one with two seeds borrows it; a point with two
LRs is read with it too). An LR where a seed diverged is left out of the fit. Each point's
noise is its seeds' scatter around each LR's mean (dof: runs minus LRs); a point with one seed
borrows the scatter pooled over its arm's other points (else its family's); where there is no
scatter at all nothing is tested (`edge` '', `lr_vertex_lo`/`_hi` NaN). The fitted slope at an
edge, b_p + 2a(u_edge - centre), gets its variance from each point's own noise (sandwich) and
is judged by Student's t at Satterthwaite's dof: `edge` says "lowest" or "highest" only where
that slope still points out of the sweep by more than its one-sided 95% quantile (EDGE_LEVEL).
With a significant curvature this is the vertex's interval (Fieller's, `lr_vertex_lo` to
`lr_vertex_hi`, 90% two-sided) lying wholly beyond that edge; without one (flat, concave) it is a
significant trend out of the sweep. `lr_vertex`: the vertex (NaN where the fitted curvature is
<= 0); `lr_add`: the LR one step beyond the flagged edge in the sweep's own step there (4x the
rule's LR after grid.lr [0.5, 1, 2]). On simulated ladders of the shipped isoparametric sweep
(1% run noise, loss x (1 + 0.01 (log2 LR - optimum)^2); tests/unit/test_analysis_lr_edge.py) it
fires in 1-2% of points whose optimum lies within the swept octaves (5% with it exactly at
an edge), and with the optimum one octave beyond an edge in 96% of 17-seed points and ~80% of 2-seed
points (which borrow the 17-seed point's curvature); 35% where both swept sizes have 2 seeds
(Dense there). A curvature that differs between sizes breaks the borrowing: 2x sharper at the
2-seed size, it fired in 14% of points with the optimum inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.inputs.runs import budget_ids
from analysis.laws.lr_edge import edge_readings, mean_over

CHOICE_COLUMNS = ["family", "arm", "size", "tokens", "seeds", "lr", "loss", "swept", "edge",
                  "estimator", "lr_vertex", "lr_vertex_lo", "lr_vertex_hi", "lr_add"]
NO_EDGE = {"lr_vertex": np.nan, "lr_vertex_lo": np.nan, "lr_vertex_hi": np.nan, "lr_add": np.nan}


def _fmt(lr: float) -> str:
    return f"{lr:.3g}"


def _means(point: pd.DataFrame, lrs: np.ndarray, seeds: np.ndarray, usable: np.ndarray
           ) -> np.ndarray:
    """(seeds, lrs) final losses (NaN: not run; inf: diverged or unusable)."""
    grid = np.full((seeds.size, lrs.size), np.nan)
    s_idx = np.searchsorted(seeds, point["seed"].to_numpy())
    l_idx = np.searchsorted(lrs, point["lr"].to_numpy(float))
    loss = np.where(usable, point["loss"].to_numpy(float), np.inf)
    grid[s_idx, l_idx] = loss
    return grid


def keep_batch(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The LR rule on (..., seeds, LRs) final losses (NaN: not run; inf: diverged): (the LR
    chosen on the mean over the seeds (...,), the LR each seed keeps (..., seeds): that one,
    or where a seed lacks it, its own best)."""
    best = np.argmin(mean_over(grid, np.arange(grid.shape[-2])), axis=-1)
    own = np.take_along_axis(grid, best[..., None, None].repeat(grid.shape[-2], -2), axis=-1)
    fallback = np.argmin(np.where(np.isnan(grid), np.inf, grid), axis=-1)
    return best, np.where(np.isfinite(own[..., 0]), best[..., None], fallback)


def _keep(grid: np.ndarray) -> tuple[int, np.ndarray]:
    best, per_seed = keep_batch(grid)
    return int(best), per_seed


def pooled_choice(means: np.ndarray) -> np.ndarray:
    """Leave-one-size-out LR choice (`pooled`): means (..., P, K) seed-mean final losses of P
    sizes at the same K LR multipliers (inf: diverged); returns (..., P) the index each size
    keeps: the lowest sum over the other sizes of log mean minus that size's mean over the LRs
    (an LR where another size diverged is never chosen)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        logm = np.log(means)
        finite = np.isfinite(logm)
        centre = np.where(finite, logm, 0.0).sum(-1, keepdims=True) / finite.sum(-1, keepdims=True)
        c = np.where(finite, logm - centre, np.where(np.isnan(logm), 0.0, np.inf))
    others = c.sum(axis=-2, keepdims=True) - np.where(np.isinf(c), 0.0, c)
    others = np.where(np.isnan(others), np.inf, others)
    return np.argmin(others, axis=-1)


def _pooled_keep(points: list, grid_of) -> dict:
    """{point index: the LR index its sizes' other sizes choose} for points of one (family,
    arm) whose LR multipliers (log LR minus the lowest) match another point's."""
    out = {}
    by_pattern: dict = {}
    for j, (_, _, lrs) in enumerate(points):
        pattern = tuple(np.round(np.log2(lrs / lrs[0]), 3))
        by_pattern.setdefault(pattern, []).append(j)
    for members in by_pattern.values():
        if len(members) < 2:
            continue
        means = np.stack([mean_over(grid_of(j), np.arange(grid_of(j).shape[0]))
                          for j in members])
        for j, k in zip(members, pooled_choice(means), strict=True):
            out[j] = int(k)
    return out


def _losers(point: pd.DataFrame, kept: set, lr_of: dict) -> dict:
    """{row index: why it is not kept} for the usable runs of a sweep point not kept."""
    out = {}
    for i, lr, loss, seed, reason in zip(point.index, point["lr"], point["loss"], point["seed"],
                                         point["reason"], strict=True):
        if i in kept or reason != "":
            continue
        won = lr_of.get(seed)
        out[i] = (f"LR sweep: lr {_fmt(lr)} (loss {loss:.4f}) not kept"
                  + (f": seed {seed} keeps lr {_fmt(won)}" if won else ""))
    return out


@dataclass(frozen=True)
class LrChoice:
    """The LR choice: one row per sweep point (CHOICE_COLUMNS), and the rows of the table it was
    given (by index) that it leaves out, with why, or whose loss it moves (`vertex`)."""

    choices: pd.DataFrame
    excluded: pd.Series  # row index -> reason
    loss: pd.Series  # row index -> the kept run's loss at the quadratic's optimum (vertex)

    def by_run(self, table: pd.DataFrame) -> pd.Series:
        """The runs left out, run_id -> reason (`table`: the table the choice was made on)."""
        return pd.Series(self.excluded.to_numpy(), dtype=object,
                         index=table["run_id"].reindex(self.excluded.index).to_numpy())

    def fitted(self, table: pd.DataFrame) -> pd.DataFrame:
        """`table` with the kept runs' losses as the choice reads them."""
        if self.loss.empty:
            return table
        return table.assign(loss=self.loss.combine_first(table["loss"]))


def _points(table: pd.DataFrame, tol: float):
    """Every sweep point with two or more LRs: ((family, arm, size), its runs, its LRs)."""
    swept = table[np.isfinite(table["lr"]) & (table["status"] == "FINISHED")]
    for key, g in swept.groupby(["family", "arm", "size"], sort=True):
        budgets = budget_ids(g["tokens"].to_numpy(float), tol)
        for _, point in g.groupby(budgets, sort=True):
            lrs = np.unique(point["lr"].to_numpy(float))
            if lrs.size >= 2 and (point["reason"] == "").any():
                yield key, point, lrs


def select_lr(table: pd.DataFrame, tol: float = 0.05, estimator: str = "mean"
              ) -> LrChoice:  # noqa: C901 (one loop over the points, three rules)
    """The LR kept at every sweep point of `table` (its `reason` column: '' for a usable run):
    one choice per point (none when no point has two LRs), the runs not kept, and with `vertex`
    the kept runs' losses moved to the quadratic's optimum."""
    points = list(_points(table, tol))
    curv = _curvatures(table, points) if estimator == "vertex" else {}
    grids = {}

    def grid_of(j: int) -> np.ndarray:
        if j not in grids:
            _, point, lrs = points[j]
            grids[j] = _means(point, lrs, np.unique(point["seed"].to_numpy()),
                              (point["reason"] == "").to_numpy())
        return grids[j]

    pooled = {}
    if estimator == "pooled":
        for key in {(fam, arm) for (fam, arm, _), _, _ in points}:
            members = [j for j, ((f, a, _), _, _) in enumerate(points) if (f, a) == key]
            found = _pooled_keep([points[j] for j in members],
                                 lambda i, members=members: grid_of(members[i]))
            pooled.update({members[i]: k for i, k in found.items()})
    edges = edge_readings(points, grid_of)
    choices, excluded, moved = [], {}, {}
    for j, ((fam, arm, size), point, lrs) in enumerate(points):
        seeds = np.unique(point["seed"].to_numpy())
        grid = grid_of(j)
        best, per_seed = _keep(grid)
        if j in pooled:
            best = pooled[j]
            own = grid[:, best]
            per_seed = np.where(np.isfinite(own), best,
                                np.argmin(np.where(np.isnan(grid), np.inf, grid), axis=-1))
        loss = float(mean_over(grid, np.arange(seeds.size))[best])
        lr = float(lrs[best])
        a = curv.get((fam, arm))
        if a is not None:
            lr, loss, shift, per_seed = _vertex(grid, lrs, a, best)
            for k, s in enumerate(seeds):
                i = point.index[(point["seed"] == s) & (point["lr"] == lrs[per_seed[k]])]
                moved.update((point.loc[i, "loss"] + shift[k]).items())
        lr_of = {s: float(lrs[per_seed[k]]) for k, s in enumerate(seeds)}
        kept = {i for i, seed, lr in zip(point.index, point["seed"], point["lr"], strict=True)
                if lr_of.get(seed) == lr}
        excluded.update(_losers(point, kept, lr_of))
        choices.append({"family": fam, "arm": arm, "size": size,
                        "tokens": float(point["tokens"].max()), "seeds": int(seeds.size),
                        "lr": lr, "loss": loss, "swept": ", ".join(_fmt(v) for v in lrs),
                        "edge": "", "estimator": "vertex" if a is not None else
                        "pooled" if j in pooled else ("mean" if seeds.size > 1 else "one seed"),
                        **NO_EDGE, **edges.get(j, {})})
    return LrChoice(pd.DataFrame(choices, columns=CHOICE_COLUMNS),
                    pd.Series(excluded, dtype=object), pd.Series(moved, dtype=float))


def _curvatures(table: pd.DataFrame, points) -> dict:
    """(family, arm) -> the curvature a of loss ~ c_size + b_size u + a u^2 (u = log LR) fitted
    to the seed means of its points with three or more LRs; left out where a <= 0 or there are
    fewer than three such LRs (those points fall back to `mean`)."""
    by_arm: dict = {}
    for (fam, arm, _), point, lrs in points:
        if lrs.size < 3:
            continue
        seeds = np.unique(point["seed"].to_numpy())
        m = mean_over(_means(point, lrs, seeds, (point["reason"] == "").to_numpy()),
                       np.arange(seeds.size))
        by_arm.setdefault((fam, arm), []).append((np.log(lrs), m))
    out = {}
    for key, pts in by_arm.items():
        rows, y = [], []
        for j, (u, m) in enumerate(pts):
            ok = np.isfinite(m)
            for uu, mm in zip(u[ok], m[ok], strict=True):
                r = np.zeros(2 * len(pts) + 1)
                r[2 * j], r[2 * j + 1], r[-1] = 1.0, uu, uu * uu
                rows.append(r)
                y.append(mm)
        if len(y) > 2 * len(pts):
            coef = np.linalg.lstsq(np.array(rows), np.array(y), rcond=None)[0]
            if coef[-1] > 0:
                out[key] = float(coef[-1])
    return out


def _vertex(grid: np.ndarray, lrs: np.ndarray, a: float, best: int):
    """(lr at the vertex, loss there, each seed's shift, each seed's kept LR index): the
    quadratic with curvature a and this point's own level and slope, vertex inside the sweep."""
    u = np.log(lrs)
    m = mean_over(grid, np.arange(grid.shape[0]))
    ok = np.isfinite(m)
    if ok.sum() < 2:
        loss = float(m[best])
        return float(lrs[best]), loss, np.zeros(grid.shape[0]), np.full(grid.shape[0], best)
    design = np.column_stack([np.ones(ok.sum()), u[ok]])
    c, b = np.linalg.lstsq(design, m[ok] - a * u[ok] ** 2, rcond=None)[0]
    lo, hi = u[ok].min(), u[ok].max()
    v = float(np.clip(-b / (2 * a), lo, hi))
    q = c + b * u + a * u ** 2
    at_v = c + b * v + a * v * v
    near = int(np.argmin(np.where(ok, np.abs(u - v), np.inf)))
    keep = np.full(grid.shape[0], near)
    shift = at_v - q[keep]
    return float(np.exp(v)), float(at_v), shift, keep


# --- the edge warning -------------------------------------------------------------------------
