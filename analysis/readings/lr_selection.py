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
from scipy.special import stdtrit  # Student-t quantile (scipy.stats imports slowly)

from analysis.inputs.runs import budget_ids

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


def mean_over(grid: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean over the chosen seeds (axis -2) of each LR; inf where any of them diverged."""
    g = np.take(grid, rows, axis=-2)
    finite = np.isfinite(g)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(finite, g, 0.0).sum(axis=-2) / finite.sum(axis=-2)
    bad = np.isinf(g).any(axis=-2) | ~np.isfinite(m)
    return np.where(bad, np.inf, m)


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

EDGE_LEVEL = 0.95  # one-sided: an optimum beyond an edge by more than its own uncertainty
_SD_FLOOR = 1e-7  # ln-loss sd floor: noise-free runs still give a finite test


@dataclass(frozen=True)
class _Sweep:
    """One sweep point's runs as the edge fit reads them: ln loss against log2 LR at the LRs
    where no seed diverged, and the seeds' scatter around each LR's mean."""

    u: np.ndarray  # log2 LR of each run
    y: np.ndarray  # ln loss of each run
    lrs: np.ndarray  # every LR swept
    ok: np.ndarray  # (lrs,) the LRs in the fit
    ss: float  # sum of squares within LRs
    dof: int  # its degrees of freedom


def _sweep(grid: np.ndarray, lrs: np.ndarray) -> _Sweep:
    ok = np.isfinite(mean_over(grid, np.arange(grid.shape[0])))
    g = np.log(np.where(np.isfinite(grid[:, ok]), grid[:, ok], np.nan))
    have = np.isfinite(g)
    u = np.broadcast_to(np.log2(lrs[ok]), g.shape)[have]
    dev = g - np.nanmean(np.where(have, g, np.nan), axis=0) if have.any() else g
    return _Sweep(u=u, y=g[have], lrs=lrs, ok=ok, ss=float(np.nansum(dev[have] ** 2)),
                  dof=int(max(0, (have.sum(axis=0) - 1).clip(0).sum())))


def _noise(sweeps: dict, members: list, family: list) -> dict:
    """j -> (ln-loss sd, its dof): a point's own seeds' scatter where it has any; else pooled
    over its arm's other points, else over its family's; (nan, 0) where nothing has seeds."""
    def pool(js):
        ss, dof = sum(sweeps[i].ss for i in js), sum(sweeps[i].dof for i in js)
        return (np.sqrt(ss / dof), dof) if dof > 0 else (np.nan, 0)
    out = {}
    for j in members:
        s = sweeps[j]
        out[j] = (np.sqrt(s.ss / s.dof), s.dof) if s.dof > 0 else \
            pool([i for i in members if i != j])
        if out[j][1] == 0:
            out[j] = pool([i for i in family if i != j])
    return out


def _edge_arm(sweeps: dict, members: list, noise: dict) -> dict:
    """The edge reading of one (family, arm)'s points: ln loss ~ c_p + b_p u + a u^2 (u = log2
    LR) by least squares over the runs, each point its own level and slope, one curvature a
    (so a point with many seeds mostly fits its own, one with few borrows it); each estimate's
    variance from each point's own noise (sandwich), its dof by Satterthwaite."""
    fit = [j for j in members if sweeps[j].ok.sum() >= 2]
    if not any(sweeps[j].ok.sum() >= 3 for j in fit):
        return {}
    testable = all(np.isfinite(noise[j][0]) for j in fit)
    centre = {j: float(np.log2(sweeps[j].lrs[sweeps[j].ok]).mean()) for j in fit}
    blocks, y = [], []
    for p, j in enumerate(fit):
        s = sweeps[j]
        x = np.zeros((s.u.size, 2 * len(fit) + 1))
        x[:, 2 * p], x[:, 2 * p + 1], x[:, -1] = 1.0, s.u - centre[j], (s.u - centre[j]) ** 2
        blocks.append(x)
        y.append(s.y)
    bread = np.linalg.pinv(np.vstack(blocks).T @ np.vstack(blocks))
    theta = bread @ (np.vstack(blocks).T @ np.concatenate(y))
    # each point's share of the estimates' covariance (its runs' noise)
    parts = [bread @ (x.T @ x) @ bread * max(noise[j][0], _SD_FLOOR) ** 2 if testable else
             np.zeros_like(bread) for x, j in zip(blocks, fit, strict=True)]
    dof = np.array([noise[j][1] for j in fit], float)
    out = {}
    for p, j in enumerate(fit):
        s = sweeps[j]
        rel = np.log2(s.lrs) - centre[j]
        a, b = theta[-1], theta[2 * p + 1]
        r = {"lr_vertex": _exp2(centre[j] - b / (2 * a)) if a > 0 else np.nan,
             "lr_vertex_lo": np.nan, "lr_vertex_hi": np.nan, "edge": "", "lr_add": np.nan}
        if testable:
            tests, q = {}, []
            for side, k in (("lowest", 0), ("highest", s.lrs.size - 1)):
                h = np.zeros(theta.size)
                h[2 * p + 1], h[-1] = 1.0, 2.0 * rel[k]  # the slope at that edge
                var = np.array([h @ v @ h for v in parts])
                total = max(float(var.sum()), _SD_FLOOR ** 2)
                spread = float(np.sum(var ** 2 / dof))  # Satterthwaite: total^2 / this
                q.append(stdtrit(max(total ** 2 / spread, 1.0) if spread > 0 else 1e6,
                                 EDGE_LEVEL))
                if s.ok[k]:
                    tests[side] = (1.0 if side == "lowest" else -1.0) * (h @ theta) / np.sqrt(total)
            q = float(max(q))
            idx = [2 * p + 1, theta.size - 1]
            cov = sum(parts)[np.ix_(idx, idx)]
            r["lr_vertex_lo"], r["lr_vertex_hi"] = (
                _exp2(centre[j] + v) for v in _fieller(a, b, cov, q))
            side = max(tests, key=lambda k: tests[k], default=None)
            if side is not None and tests[side] > q:
                r["edge"], r["lr_add"] = side, _beyond(s.lrs, side)
        out[j] = r
    return out


def _exp2(v: float) -> float:
    return float(np.inf if v > 1000 else 0.0 if v < -1000 else 2.0 ** v)


def _fieller(a: float, b: float, cov: np.ndarray, q: float) -> tuple[float, float]:
    """The vertex's interval (log2 LR, centred): every u whose slope b + 2 a u is within q of
    its sd of zero (cov: that of (b, a)); unbounded where the curvature is not significantly
    positive (a significantly negative one bounds a maximum, not the optimum)."""
    (vbb, vab), (_, vaa) = cov
    qa, qb, qc = 4 * (a * a - q * q * vaa), 4 * (a * b - q * q * vab), b * b - q * q * vbb
    disc = qb * qb - 4 * qa * qc
    if a <= 0 or qa <= 0 or disc < 0:
        return -np.inf, np.inf
    root = np.sqrt(disc)
    return (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)


def _beyond(lrs: np.ndarray, side: str) -> float:
    """The LR one step beyond an edge, in the sweep's own step there."""
    return float(lrs[-1] ** 2 / lrs[-2] if side == "highest" else lrs[0] ** 2 / lrs[1])


def edge_readings(points: list, grid_of) -> dict:
    """j -> {lr_vertex, lr_vertex_lo, lr_vertex_hi, edge, lr_add} for the sweep points of
    `select_lr` (module docstring: the edge warning)."""
    sweeps = {j: _sweep(grid_of(j), lrs) for j, (_, _, lrs) in enumerate(points)}
    by_arm, by_family = {}, {}
    for j, ((fam, arm, _), _, _) in enumerate(points):
        by_arm.setdefault((fam, arm), []).append(j)
        by_family.setdefault(fam, []).append(j)
    out = {}
    for (fam, _), members in by_arm.items():
        out.update(_edge_arm(sweeps, members, _noise(sweeps, members, by_family[fam])))
    return out
