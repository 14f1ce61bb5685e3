"""Is an LR winner at the edge of its sweep the edge of the optimum? (the LR table's flag)

A quadratic in log2 LR through each sweep point's seed means (the arm's points share one
curvature; each point's noise from its own seeds, else its arm's, else its family's) puts the
optimum beyond the LRs swept only where the slope at the edge still points outward by more than
its own uncertainty (one-sided 95%); `edge_readings` gives each point's vertex with its 90%
interval and the LR to add one step further. analysis/readings/lr_selection.py reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # Student-t quantile (scipy.stats imports slowly)

EDGE_LEVEL = 0.95  # one-sided: an optimum beyond an edge by more than its own uncertainty
_SD_FLOOR = 1e-7  # ln-loss sd floor: noise-free runs still give a finite test

def mean_over(grid: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean over the chosen seeds (axis -2) of each LR; inf where any of them diverged."""
    g = np.take(grid, rows, axis=-2)
    finite = np.isfinite(g)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(finite, g, 0.0).sum(axis=-2) / finite.sum(axis=-2)
    bad = np.isinf(g).any(axis=-2) | ~np.isfinite(m)
    return np.where(bad, np.inf, m)


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
