"""The quadratic LR law of one arm and what a size that ran one LR misses by it.

loss = L*·(1 + a·(u - O)^2) at log2 LR u: one curvature a per arm, each swept size its own level
and optimum O (`fit_arm`, weighted least squares over M ladders at once); a line in log N through
the swept optima and the expected miss a·(D^2 + s^2) of a size that ran one LR at the line's
distance D, with its replicates' errors (`miss`); the same on simulated grids (`correct_batch`,
analysis.power.simulate). The analysis's use: analysis/laws/lr_miss.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Point:
    """One swept (size, budget) of an arm: x = log N, log2 LRs u (K,), relative seed means y
    (M, K) (inf: diverged; nan: not run), their variances v (M, K)."""

    x: float
    u: np.ndarray
    y: np.ndarray
    v: np.ndarray


@dataclass(frozen=True)
class ArmFit:
    """The quadratic of one arm over M ladders: curvature (M,), its sd (M,), each point's
    slope at its centre (M, P) with covariance (M, P, P), level (M, P), the draws' ingredients."""

    theta: np.ndarray  # (M, q): levels, slopes, curvature
    cov: np.ndarray  # (M, q, q)
    centre: np.ndarray  # (P,) each point's mean log2 LR
    lo: np.ndarray  # (P,) lowest and highest log2 LR swept
    hi: np.ndarray
    x: np.ndarray  # (P,) log N

    @property
    def points(self) -> int:
        return self.centre.size

    @property
    def a(self) -> np.ndarray:
        return self.theta[:, -1]

    @property
    def a_sd(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.cov[:, -1, -1], 0.0))

    def a_den(self, a: np.ndarray | None = None) -> np.ndarray:
        """The curvature a slope is divided by: at least twice its own sd (a flat curve has no
        vertex to place)."""
        a = self.a if a is None else a
        floor = 2.0 * self.a_sd
        return np.maximum(a, floor.reshape(floor.shape + (1,) * (a.ndim - floor.ndim)) + 1e-12)

    @property
    def slopes(self) -> np.ndarray:
        return self.theta[:, self.points:2 * self.points]

    @property
    def levels(self) -> np.ndarray:
        return self.theta[:, :self.points]

    def optima(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, P) each point's vertex in log2 LR and its sd (delta method)."""
        p, a = self.points, self.a_den()
        b = self.slopes
        o = self.centre - b / (2 * a[:, None])
        var_b = np.einsum("mpp->mp", self.cov[:, p:2 * p, p:2 * p])
        cov_ab = self.cov[:, p:2 * p, -1]
        var_a = self.cov[:, -1, -1][:, None]
        g_b, g_a = -1 / (2 * a[:, None]), b / (2 * a[:, None] ** 2)
        var = g_b ** 2 * var_b + g_a ** 2 * var_a + 2 * g_a * g_b * cov_ab
        return o, np.sqrt(np.maximum(var, 0.0))

    def at_optimum(self) -> np.ndarray:
        """(M, P) each point's relative level at its optimum (inside the swept range): the
        quadratic's minimum, less the squared slope's variance (unbiased)."""
        p, a = self.points, self.a_den()[:, None]
        b, lev = self.slopes, self.levels
        var_b = np.einsum("mpp->mp", self.cov[:, p:2 * p, p:2 * p])
        v = np.clip(-b / (2 * a), self.lo - self.centre, self.hi - self.centre)
        inside = np.abs(-b / (2 * a) - v) < 1e-12
        at_v = lev + b * v + np.maximum(self.a, 0.0)[:, None] * v * v
        return np.where(inside, lev - (b * b - var_b) / (4 * a), at_v)


def fit_arm(points: list[Point]) -> ArmFit | None:
    """The quadratic of one arm's swept points over M ladders (module docstring), None where it
    cannot be fitted (no point with three LRs)."""
    if not points or not any((np.isfinite(p.y).sum(-1) >= 3).any() for p in points):
        return None
    n_p = len(points)
    q = 2 * n_p + 1
    rows, ys, ws = [], [], []
    centre = np.array([float(np.mean(p.u)) for p in points])
    for j, p in enumerate(points):
        for k, u in enumerate(p.u):
            r = np.zeros(q)
            d = u - centre[j]
            r[j], r[n_p + j], r[-1] = 1.0, d, d * d
            rows.append(r)
            ok = np.isfinite(p.y[:, k]) & np.isfinite(p.v[:, k]) & (p.v[:, k] > 0)
            ys.append(np.where(ok, p.y[:, k], 0.0))
            ws.append(np.where(ok, 1.0 / np.where(ok, p.v[:, k], 1.0), 0.0))
    x = np.array(rows)  # (n, q)
    y, w = np.stack(ys, 1), np.stack(ws, 1)  # (M, n)
    a_mat = np.einsum("mn,ni,nj->mij", w, x, x) + 1e-12 * np.eye(q)
    rhs = np.einsum("mn,ni,mn->mi", w, x, y)
    theta = np.linalg.solve(a_mat, rhs[..., None])[..., 0]
    cov = np.linalg.inv(a_mat)
    lo = np.array([float(np.min(p.u)) for p in points])
    hi = np.array([float(np.max(p.u)) for p in points])
    return ArmFit(theta, cov, centre, lo, hi, np.array([p.x for p in points]))


def line_weights(x_points: np.ndarray, x_targets: np.ndarray) -> np.ndarray:
    """(T, P) h: the least-squares line in x through P points, evaluated at the targets
    (its value = h @ the points' values); one distinct x: their mean."""
    if np.unique(x_points).size < 2:
        return np.full((x_targets.size, x_points.size), 1.0 / x_points.size)
    design = np.column_stack([np.ones_like(x_points), x_points])
    pinv = np.linalg.pinv(design)  # (2, P)
    return np.column_stack([np.ones_like(x_targets), x_targets]) @ pinv


def _expected(g, b, var_b, a, a_den, hh, spread):
    """The expected miss a (D^2 + s^2), D = g + b / 2a the line's distance of the LR run from
    the optimum, unbiased: D^2 less its estimation variance and less the swept points' own
    scatter it carries (s^2 sum h^2), plus the target's own scatter s^2 (not clipped at 0: a
    clipped estimate is biased up)."""
    return (a * g * g + g * b * (a / a_den) + a * (b * b - var_b) / (4 * a_den ** 2)
            + a * spread ** 2 * (1.0 - hh))


def miss(fit: ArmFit, x_t: np.ndarray, u_t: np.ndarray, spread: float, n_rep: int,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At T targets (log N x_t, the log2 LR each ran u_t): (the expected miss (M, T), the
    estimate's error in each of n_rep replicates (M, R, T), the line's distance D of the LR run
    from the optimum (M, T), octaves).

    The replicates mimic the error of the estimate (a basic bootstrap: each replicate's loss is
    the estimate's times exp(-(miss - its estimate)) of a world drawn from the fit): the truth a
    (D + e_t)^2 with the target's own scatter e_t; the estimate from a sweep redrawn (the
    slopes and curvature from the fit's covariance, each swept optimum moved by its own scatter
    e_p) through the same unbiased formula."""
    h = line_weights(fit.x, np.asarray(x_t, float))  # (T, P)
    p = fit.points
    hh = (h * h).sum(1)  # (T,)
    g = np.asarray(u_t, float) - h @ fit.centre  # (T,)
    b = fit.slopes @ h.T  # (M, T)
    var_b = np.einsum("tp,mpq,tq->mt", h, fit.cov[:, p:2 * p, p:2 * p], h)
    a = np.maximum(fit.a, 0.0)[:, None]
    a_den = fit.a_den()[:, None]
    expected = _expected(g, b, var_b, a, a_den, hh, spread)
    distance = g + b / (2 * a_den)
    m = fit.theta.shape[0]
    chol = np.linalg.cholesky(fit.cov + 1e-18 * np.eye(fit.cov.shape[-1]))
    draws = fit.theta[:, None, :] + np.einsum("mij,mrj->mri", chol,
                                              rng.standard_normal((m, n_rep, chol.shape[-1])))
    a_r = np.maximum(draws[..., -1], 0.0)[..., None]  # (M, R, 1)
    den_r = np.maximum(a_r, 2.0 * fit.a_sd[:, None, None]) + 1e-12
    e_p = rng.standard_normal((m, n_rep, p)) * spread  # each swept optimum's own scatter
    b_r = (draws[..., p:2 * p] - 2 * a_den[..., None] * e_p) @ h.T  # (M, R, T)
    # the world drawn from: the line's distance shrunk by what its estimate carries on top
    # (its own variance and the swept points' scatter), so the replicates' spread is not
    # inflated by the noise it measures
    carried = var_b / (4 * a_den ** 2) + spread ** 2 * hh
    centre = np.sign(distance) * np.sqrt(np.maximum(distance ** 2 - carried, 0.0))
    b_c = 2 * a_den * (centre - g)  # the slope such a distance means
    b_r = b_r - b[:, None, :] + b_c[:, None, :]
    est_r = _expected(g, b_r, var_b[:, None, :], a_r, den_r, hh, spread)
    e_t = rng.standard_normal((m, n_rep, h.shape[0])) * spread
    truth_r = a[:, None, :] * (centre[:, None, :] + e_t) ** 2
    return expected, truth_r - est_r, distance


def correct_batch(grids: list[np.ndarray], kept: list[np.ndarray], cells: list, given: dict,
                  spread: float, fallback: float, n_rep: int, rng: np.random.Generator,
                  estimator: str = "mean") -> tuple[list, list]:
    """The analysis's LR model on M simulated ladders at once (analysis.power.simulate): grids
    (M, S, K) every run's loss of each cell (arm, size: .arm, .params, .lrs multipliers of the
    rule's LR, .seeds), kept (M, S) the losses the LR choice kept; given: arm -> the run noise
    a one-seed point is read with. Returns each cell's kept losses at its optimum (M, S) and its
    replicates' factor (M, R, 1) or None: what `estimate` and LrMiss.replicate_factors do."""
    out, factors = list(kept), [None] * len(cells)
    arms = {c.arm for c in cells}
    swept_any = any(len(c.lrs) >= 2 for c in cells)
    pooled = _batch_pooled_var(grids, cells)  # what a one-seed arm borrows
    for arm in sorted(arms):
        idx = [i for i, c in enumerate(cells) if c.arm == arm]
        sw = [i for i in idx if len(cells[i].lrs) >= 2]
        single = [i for i in idx if len(cells[i].lrs) < 2]
        points = [_batch_point(grids[i], cells[i], given.get(arm, given.get("all")), pooled)
                  for i in sw]
        fit = fit_arm(points) if points and all(p is not None for p in points) else None
        if fit is None:
            if swept_any and fallback > 0:
                for i in single:
                    m = grids[i].shape[0]
                    factors[i] = 1.0 + fallback * rng.standard_normal((m, n_rep, 1))
            continue
        if estimator == "mean":
            level = fit.at_optimum()  # (M, P)
            for j, i in enumerate(sw):
                ref = _batch_ref(grids[i])
                with np.errstate(all="ignore"):
                    f = ref * (1.0 + level[:, j]) / kept[i].mean(axis=1)
                out[i] = kept[i] * np.where(np.isfinite(f), f, 1.0)[:, None]
        if single:
            x_t = np.log([cells[i].params for i in single])
            u_t = np.array([float(np.log2(cells[i].lrs[0])) for i in single])
            exp_k, dev, _ = miss(fit, x_t, u_t, spread, n_rep, rng)
            for t, i in enumerate(single):
                out[i] = kept[i] * np.exp(-exp_k[:, t])[:, None]
                factors[i] = np.exp(-dev[:, :, t])[..., None]
    return out, factors


def _batch_ref(grid: np.ndarray) -> np.ndarray:
    """(M,) a swept point's reference: the mean over its LRs of the seed means."""
    with np.errstate(all="ignore"):
        m = np.nanmean(np.where(np.isinf(grid), np.nan, grid), axis=1)  # (M, K)
        return np.nanmean(m, axis=1)


def _batch_pooled_var(grids: list[np.ndarray], cells: list) -> np.ndarray | None:
    """(M,) the relative run variance pooled over every cell's seeds (None: no cell has 2)."""
    num, dof = 0.0, 0
    for g, c in zip(grids, cells, strict=True):
        if c.seeds >= 2:
            with np.errstate(all="ignore"):
                rel = g / g.mean(axis=1, keepdims=True) - 1.0
            num = num + np.nansum(np.where(np.isfinite(rel), rel, np.nan) ** 2, axis=(1, 2))
            dof += (c.seeds - 1) * g.shape[2]
    return num / dof if dof else None


def _batch_point(grid: np.ndarray, cell, given: float | None,
                 pooled: np.ndarray | None = None) -> Point | None:
    """A swept cell of M ladders as a Point (its own seeds' scatter, or the given level, or
    the other cells' pooled variance)."""
    m, s, _ = grid.shape
    ref = _batch_ref(grid)[:, None]
    with np.errstate(all="ignore"):
        means = grid.mean(axis=1)  # (M, K)
        y = means / ref - 1.0
        if s >= 2:
            rel = grid / means[:, None, :] - 1.0
            var = (rel ** 2).sum(axis=(1, 2)) / (rel.shape[2] * (s - 1))  # (M,)
        elif given is not None:
            var = np.full(m, float(given) ** 2)
        elif pooled is not None:
            var = pooled
        else:
            return None
    v = np.repeat(np.maximum(var, 1e-12)[:, None] / s, y.shape[1], axis=1)
    return Point(float(np.log(cell.params)), np.log2(np.asarray(cell.lrs, float)), y, v)


def run_factors(factors: list, seeds: list[int], m: int, r: int) -> np.ndarray | None:
    """(M, R, runs) each run's replicate factor from its cell's (M, R, 1) or None (1)."""
    if all(f is None for f in factors):
        return None
    return np.concatenate([np.ones((m, r, n)) if f is None else np.broadcast_to(f, (m, r, n))
                           for f, n in zip(factors, seeds, strict=True)], axis=2)
