"""Saturating power laws L(x) = A·x^-alpha + b, fitted robustly in log space.

The fit minimises a Huber loss on log residuals, log L - log(A·x^-alpha + b), the objective
Hoffmann et al. and Epoch AI use for the Chinchilla fits. Parameters live in log space
(a = log A, e = log b) with x centred on its mean log so that a and alpha decorrelate; a few
starting points (an OLS fit of log(L - b) plus a grid of exponents) all go at once to the one
batched Levenberg-Marquardt solver (analysis.laws.lm), the best end point wins.
The same code fits L(N) (x = parameters) and L(D) (x = tokens).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from analysis.config import B_DEFAULT  # Hoffmann et al.'s fitted irreducible loss E
from analysis.laws import lm
from leviathan.errors import LeviathanError

HUBER_DELTA = 1e-3  # Hoffmann et al. / Epoch AI
ALPHA_BOUNDS = (1e-4, 5.0)  # exponents outside this range mean the data do not follow a power law
ALPHA_STARTS = (0.05, 0.3, 0.6, 1.2)


class FitError(LeviathanError, ValueError):
    """A fit cannot be done on the given points (too few, or all below the asymptote)."""


@dataclass
class PowerLaw:
    """L(x) = A·x^-alpha + b."""

    A: float  # scale
    alpha: float  # exponent
    b: float  # asymptote (irreducible loss)
    b_fixed: bool  # True when b was given, False when it was fitted
    n_points: int  # points the fit used
    objective: float  # final Huber objective (per point, in units of delta)

    def predict(self, x):
        return self.A * np.asarray(x, dtype=float) ** (-self.alpha) + self.b

    def inverse(self, loss):
        """x at which the curve reaches `loss`; NaN where loss <= b (never reached)."""
        loss = np.asarray(loss, dtype=float)
        gap = loss - self.b
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = np.exp((math.log(self.A) - np.log(gap)) / self.alpha)
        return np.where(gap > 0, out, np.nan)

    def as_dict(self) -> dict:
        return asdict(self)


def _model(u, onehot, e):
    """log L = logaddexp(a_group - alpha·u, e) and its Jacobian, for theta (S, G + 1)."""
    def pred_jac(theta):
        t1 = theta[:, :-1] @ onehot.T - theta[:, -1:] * u  # (S, n)
        pred = np.logaddexp(t1, e)
        w = np.exp(t1 - pred)  # d pred / d a_group
        return pred, np.concatenate([w[:, :, None] * onehot[None], (-w * u)[:, :, None]], axis=2)
    return pred_jac


def refit_batch(u, y, group, weights, e, start, *, delta: float = HUBER_DELTA, iters: int = 100):
    """Fit log L = logaddexp(a_group - alpha·u, e) once per row of `weights`, all at once.

    u, group: (n,) centred log x and group index in [0, G). y: (n,) log L, or (R, n) one target
    per row (a residual bootstrap). weights: (R, n) point counts (bootstrap multiplicities, or
    ones). e: log b (fixed). start: (G + 1,) or (R, G + 1) = (a_0 .. a_{G-1}, alpha). A group
    absent from a row (weight 0) keeps its start. Returns (R, G + 1).
    """
    u, y = np.asarray(u, float), np.asarray(y, float)
    group = np.asarray(group, int)
    weights = np.asarray(weights, float)
    n_rep, n_groups = weights.shape[0], int(group.max()) + 1
    onehot = np.eye(n_groups)[group]  # (n, G)
    theta = np.broadcast_to(np.asarray(start, float), (n_rep, n_groups + 1))
    free = np.concatenate([(weights @ onehot) > 0, np.ones((n_rep, 1), bool)], axis=1)
    model = _model(u, onehot, e)

    def residuals(th, rows):
        pred, jac = model(th)
        return pred - (y if y.ndim == 1 else y[rows]), jac

    lower = np.r_[np.full(n_groups, -np.inf), ALPHA_BOUNDS[0]]
    upper = np.r_[np.full(n_groups, np.inf), ALPHA_BOUNDS[1]]
    theta, _ = lm.solve(residuals, theta, delta=delta, weights=weights, lower=lower,
                        upper=upper, free=free, iters=iters)
    return theta


def batch_objective(theta, u, y, group, weights, e, delta) -> np.ndarray:
    """(R,) Huber objective of each row of theta (as refit_batch's rows)."""
    group = np.asarray(group, int)
    pred, _ = _model(np.asarray(u, float), np.eye(int(group.max()) + 1)[group], e)(theta)
    return lm.objective(pred - y, weights, delta)


def fit_power_law(
    x,
    loss,
    *,
    b: float | None = B_DEFAULT,
    delta: float = HUBER_DELTA,
    alpha_starts=ALPHA_STARTS,
    near: PowerLaw | None = None,
) -> PowerLaw:
    """Fit L = A·x^-alpha + b; b fixed when given, fitted (within (0, min L)) when None.

    `near`: a previous fit (e.g. the full-data one when refitting a bootstrap replicate); with b
    free the search then starts only there and from the OLS start instead of the grid.
    """
    x = np.asarray(x, dtype=float)
    loss = np.asarray(loss, dtype=float)
    ok = np.isfinite(x) & np.isfinite(loss) & (x > 0) & (loss > 0)
    x, loss = x[ok], loss[ok]
    if np.unique(x).size < 2:
        raise FitError(f"need points at two or more distinct x to fit a power law, got "
                       f"{np.unique(x).size} distinct of {x.size} points")
    if b is None and np.unique(x).size < 3:
        raise FitError("fitting b as well needs points at three or more distinct x")
    lx = np.log(x)
    x0 = float(lx.mean())
    u, y = lx - x0, np.log(loss)

    starts = []
    b_start = b if b is not None else 0.8 * float(loss.min())
    above = loss > b_start
    if np.unique(u[above]).size >= 2:  # OLS on log(L - b): the exact answer for noise-free data
        slope, icpt = np.polyfit(u[above], np.log(loss[above] - b_start), 1)
        starts.append((icpt, float(np.clip(-slope, *ALPHA_BOUNDS))))
    gap = max(float(np.median(loss)) - b_start, 1e-3)
    if near is not None and b is None:
        b_start = min(near.b, 0.999 * float(loss.min()))
        starts = starts[:1] + [(math.log(near.A) - near.alpha * x0, near.alpha)]
    else:
        starts += [(math.log(gap), a) for a in alpha_starts]

    st = np.array(starts, float)
    if b is not None:  # all starts at once through the batched solver
        e = math.log(b)
        ones = np.ones((st.shape[0], u.size))
        theta = refit_batch(u, y, np.zeros(u.size, int), ones, e, st, delta=delta)
        obj = batch_objective(theta, u, y, np.zeros(u.size, int), ones, e, delta)
        a_c, alpha = (float(v) for v in theta[int(np.argmin(obj))])
        return PowerLaw(A=math.exp(a_c + alpha * x0), alpha=alpha, b=float(b), b_fixed=True,
                        n_points=int(x.size), objective=float(obj.min()) / x.size)
    # b free: theta = (a_c, alpha, e), e = log b kept below log(min L)
    st = np.column_stack([st, np.full(len(st), math.log(b_start))])
    theta, obj = _solve_free_b(u, y, st, 1.0, delta, float(loss.min()))
    a_c, alpha, e = (float(v) for v in theta[int(np.argmin(obj))])
    return PowerLaw(A=math.exp(a_c + alpha * x0), alpha=alpha, b=math.exp(e), b_fixed=False,
                    n_points=int(x.size), objective=float(obj.min()) / x.size)


def _solve_free_b(u, y, theta, weights, delta: float, min_loss: float):
    """log L = logaddexp(a_c - alpha·u, e) with e = log b free in (log 1e-3, log min L), every
    row of theta (S, 3) at once (weights: scalar or (S, n); y: (n,) or one row per theta row)."""
    def residuals(th, rows):
        t1 = th[:, :1] - th[:, 1:2] * u
        pred = np.logaddexp(t1, th[:, 2:3])
        w = np.exp(t1 - pred)
        return pred - (y if y.ndim == 1 else y[rows]), np.stack([w, -w * u, 1.0 - w], axis=-1)

    return lm.solve(residuals, theta, delta=delta, weights=weights, iters=500,
                    lower=[-50.0, ALPHA_BOUNDS[0], math.log(1e-3)],
                    upper=[50.0, ALPHA_BOUNDS[1], math.log(min_loss) - 1e-9])


def refit_free_b(x, loss, counts, fit: PowerLaw, *, delta: float = HUBER_DELTA) -> np.ndarray:
    """(R, 3) bootstrap (A, alpha, b) with b free: L(x) refitted once per row of counts (R, n)
    (point multiplicities) and of loss ((n,), or (R, n): one replicate of the losses per row),
    all rows at once from `fit`; NaN where a row has fewer than three distinct x. b stays below
    the smallest loss of all points."""
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    counts = np.asarray(counts, float)
    lx = np.log(x)
    x0 = float(lx.mean())
    start = [math.log(fit.A) - fit.alpha * x0, fit.alpha,
             math.log(min(fit.b, 0.999 * float(loss.min())))]
    theta, _ = _solve_free_b(lx - x0, np.log(loss), np.tile(start, (counts.shape[0], 1)), counts,
                             delta, float(loss.min()))
    _, inverse = np.unique(x, return_inverse=True)
    distinct = ((counts @ np.eye(inverse.max() + 1)[inverse]) > 0).sum(axis=1)
    out = np.column_stack([np.exp(theta[:, 0] + theta[:, 1] * x0), theta[:, 1],
                           np.exp(theta[:, 2])])
    out[distinct < 3] = np.nan
    return out


@dataclass
class SharedExponent:
    """Both arms on one exponent: L = A_arm·N^-alpha + b; multiplier = (A_dense/A_lev)^(1/alpha)."""

    A_dense: float
    A_lev: float
    alpha: float
    b: float
    multiplier: float
    n_dense: int
    n_lev: int

    def as_dict(self) -> dict:
        return asdict(self)


def fit_shared_exponent(n_dense, l_dense, n_lev, l_lev, *, b: float = B_DEFAULT,
                        delta: float = HUBER_DELTA) -> SharedExponent:
    """One exponent, one scale per arm, b fixed; starts from the Dense-only fit."""
    n_dense, l_dense = np.asarray(n_dense, float), np.asarray(l_dense, float)
    n_lev, l_lev = np.asarray(n_lev, float), np.asarray(l_lev, float)
    if n_lev.size == 0:
        raise FitError("the shared-exponent fit needs at least one Leviathan run")
    dense = fit_power_law(n_dense, l_dense, b=b, delta=delta)
    lx = np.log(np.concatenate([n_dense, n_lev]))
    x0 = float(lx.mean())
    u, y = lx - x0, np.log(np.concatenate([l_dense, l_lev]))
    is_lev = np.r_[np.zeros(n_dense.size, bool), np.ones(n_lev.size, bool)]
    a_d = math.log(dense.A) - dense.alpha * x0
    gap = np.clip(l_lev - b, 1e-6, None)
    a_l = float(np.mean(np.log(gap) + dense.alpha * u[is_lev]))
    starts = np.array([[a_d, a_l, al] for al in (dense.alpha, *ALPHA_STARTS)])
    ones = np.ones((starts.shape[0], u.size))
    group = is_lev.astype(int)
    theta = refit_batch(u, y, group, ones, math.log(b), starts, delta=delta)
    obj = batch_objective(theta, u, y, group, ones, math.log(b), delta)
    a_dc, a_lc, alpha = (float(v) for v in theta[int(np.argmin(obj))])
    return SharedExponent(A_dense=math.exp(a_dc + alpha * x0), A_lev=math.exp(a_lc + alpha * x0),
                          alpha=alpha, b=float(b), multiplier=math.exp((a_dc - a_lc) / alpha),
                          n_dense=int(n_dense.size), n_lev=int(n_lev.size))


def shared_lack_of_fit(n_dense, l_dense, n_lev, l_lev, sh: SharedExponent,
                       level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the shared-exponent multiplier from the fit's own residuals.

    The scatter of log L around the fitted law (measurement noise and lack of fit alike) sets
    s^2 = RSS / (n - 3); cov = s^2 (J'J)^-1 over (a_dense, a_lev, alpha); the multiplier
    M = exp((a_dense - a_lev) / alpha) gets exp(log M +- t_{n-3} se(log M)) (the delta method),
    as Marin's pinned-asymptote effective speedup reports (marin-community/marin#8096).
    (nan, nan) with fewer than four points.
    """
    from scipy.special import stdtrit  # Student-t quantile (scipy.stats imports slowly)

    n = np.concatenate([np.asarray(n_dense, float), np.asarray(n_lev, float)])
    y = np.log(np.concatenate([np.asarray(l_dense, float), np.asarray(l_lev, float)]))
    dof = n.size - 3
    if dof < 1:
        return math.nan, math.nan
    u = np.log(n) - np.log(n).mean()
    group = np.r_[np.zeros(len(n_dense), int), np.ones(len(n_lev), int)]
    x0 = float(np.log(n).mean())
    theta = np.array([[math.log(sh.A_dense) - sh.alpha * x0, math.log(sh.A_lev) - sh.alpha * x0,
                       sh.alpha]])
    pred, jac = _model(u, np.eye(2)[group], math.log(sh.b))(theta)
    r, jac = pred[0] - y, jac[0]
    cov = float(r @ r) / dof * np.linalg.pinv(jac.T @ jac)
    grad = np.array([1.0, -1.0, -(theta[0, 0] - theta[0, 1]) / sh.alpha]) / sh.alpha
    half = float(stdtrit(dof, (1 + level) / 2)) * math.sqrt(max(grad @ cov @ grad, 0.0))
    log_m = math.log(sh.multiplier)
    # a fit with nothing to say (a tiny, flat ladder) has an unbounded interval, not a crash
    return _exp(log_m - half), _exp(log_m + half)


def _exp(x: float) -> float:
    return math.inf if x > 709.0 else math.exp(x)  # float64 overflows past e^709.78


def effective_size(fit: PowerLaw, loss, params) -> tuple[np.ndarray, np.ndarray]:
    """N_eff = (A / (L - b))^(1/alpha) and the multiplier N_eff / N (NaN where L <= b)."""
    n_eff = fit.inverse(loss)
    with np.errstate(invalid="ignore", over="ignore"):
        return n_eff, n_eff / np.asarray(params, dtype=float)


def degenerate(fit) -> bool:
    """True when the exponent sits at a bound: the losses do not follow a power law."""
    return not ALPHA_BOUNDS[0] * 10 < fit.alpha < ALPHA_BOUNDS[1] * 0.99


def x_eff(a, alpha, b, loss):
    """X at which A·X^-alpha + b = loss, broadcasting; NaN where loss <= b."""
    with np.errstate(all="ignore"):
        gap = loss - b
        return np.where(gap > 0, np.exp((np.log(a) - np.log(gap)) / alpha), np.nan)
