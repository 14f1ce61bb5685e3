"""Saturating power laws L(x) = A·x^-alpha + b, fitted robustly in log space.

The fit minimises a Huber loss on log residuals, log L - log(A·x^-alpha + b), the objective
Hoffmann et al. and Epoch AI use for the Chinchilla fits. Parameters live in log space
(a = log A, e = log b) with x centred on its mean log so that a and alpha decorrelate; a few
starting points (an OLS fit of log(L - b) plus a grid of exponents) go to L-BFGS-B with bounds.
The same code fits L(N) (x = parameters) and L(D) (x = tokens).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize

B_DEFAULT = 1.69  # Hoffmann et al.'s fitted irreducible loss E
HUBER_DELTA = 1e-3  # Hoffmann et al. / Epoch AI
ALPHA_BOUNDS = (1e-4, 5.0)  # exponents outside this range mean the data do not follow a power law
ALPHA_STARTS = (0.05, 0.3, 0.6, 1.2)


class FitError(ValueError):
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


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative, both divided by delta (same minimiser, better scaling)."""
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r * r / delta, np.abs(r) - 0.5 * delta)
    grad = np.where(small, r / delta, np.sign(r))
    return value, grad


def _objective(theta, u, y, e_fixed, delta):
    # theta = (a_c, alpha[, e]); u = log x - mean log x; y = log L
    a_c, alpha = theta[0], theta[1]
    e = theta[2] if e_fixed is None else e_fixed
    t1 = a_c - alpha * u
    m = np.maximum(t1, e)
    z1, z2 = np.exp(t1 - m), np.exp(e - m)
    pred = m + np.log(z1 + z2)
    w = z1 / (z1 + z2)  # d pred / d a_c
    value, g = huber(pred - y, delta)
    grad = [np.sum(g * w), np.sum(-g * w * u)]
    if e_fixed is None:
        grad.append(np.sum(g * (1.0 - w)))
    return float(np.sum(value)), np.array(grad)


def _batch_objective(theta, u, y, onehot, weights, e, delta):
    a = theta[:, :-1] @ onehot.T  # (R, n)
    t1 = a - theta[:, -1:] * u
    pred = np.logaddexp(t1, e)
    r = pred - y
    return (weights * huber(r, delta)[0]).sum(axis=1), t1, pred, r


def refit_batch(u, y, group, weights, e, start, *, delta: float = HUBER_DELTA, iters: int = 100):
    """Fit log L = logaddexp(a_group - alpha·u, e) once per row of `weights`, all at once.

    u, y, group: (n,) centred log x, log L, group index in [0, G). weights: (R, n) point counts
    (bootstrap multiplicities, or ones). e: log b (fixed). start: (G + 1,) or (R, G + 1) =
    (a_0 .. a_{G-1}, alpha). Levenberg-Marquardt steps on the Huber loss with IRLS weights
    min(1, delta/|r|), a step kept only when it lowers the objective. Returns (R, G + 1).
    """
    u, y = np.asarray(u, float), np.asarray(y, float)
    group = np.asarray(group, int)
    weights = np.asarray(weights, float)
    n_rep, n_groups = weights.shape[0], int(group.max()) + 1
    k = n_groups + 1
    onehot = np.eye(n_groups)[group]  # (n, G)
    theta = np.broadcast_to(np.asarray(start, float), (n_rep, k)).copy()
    # a group absent from a replicate has no information: its scale stays at the start
    free = np.concatenate([(weights @ onehot) > 0, np.ones((n_rep, 1), bool)], axis=1)
    lam = np.full(n_rep, 1e-3)
    f, t1, pred, r = _batch_objective(theta, u, y, onehot, weights, e, delta)
    for _ in range(iters):
        w = np.exp(t1 - pred)  # d pred / d a
        q = weights * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
        jac = np.concatenate([w[:, :, None] * onehot[None], (-w * u)[:, :, None]], axis=2)
        jq = jac * q[:, :, None]  # (R, n, k)
        h = np.einsum("rnp,rnq->rpq", jq, jac)
        g = np.where(free, np.einsum("rnp,rn->rp", jq, r), 0.0)
        diag = np.einsum("rpp->rp", h)
        h = h + np.eye(k)[None] * (lam[:, None, None] * diag[:, None, :] + 1e-12
                                   + (~free[:, :, None]) * 1.0)
        step = np.linalg.solve(h, -g[:, :, None])[:, :, 0]
        trial = theta + step
        trial[:, -1] = np.clip(trial[:, -1], *ALPHA_BOUNDS)
        ft, t1t, predt, rt = _batch_objective(trial, u, y, onehot, weights, e, delta)
        better = ft < f
        theta = np.where(better[:, None], trial, theta)
        f = np.where(better, ft, f)
        t1 = np.where(better[:, None], t1t, t1)
        pred = np.where(better[:, None], predt, pred)
        r = np.where(better[:, None], rt, r)
        lam = np.clip(np.where(better, lam / 3.0, lam * 4.0), 1e-12, 1e12)
        if np.abs(step).max() < 1e-9:  # every row: even the proposed step is negligible
            break
    return theta


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

    if b is not None:  # all starts at once through the batched solver
        e = math.log(b)
        st = np.array(starts, float)
        ones = np.ones((st.shape[0], u.size))
        theta = refit_batch(u, y, np.zeros(u.size, int), ones, e, st, delta=delta)
        obj = _batch_objective(theta, u, y, np.ones((u.size, 1)), ones, e, delta)[0]
        a_c, alpha = (float(v) for v in theta[int(np.argmin(obj))])
        return PowerLaw(A=math.exp(a_c + alpha * x0), alpha=alpha, b=float(b), b_fixed=True,
                        n_points=int(x.size), objective=float(obj.min()) / x.size)
    e_fixed = None
    bounds = [(-50.0, 50.0), ALPHA_BOUNDS]
    if b is None:
        bounds.append((math.log(1e-3), math.log(float(loss.min())) - 1e-9))
    best = None
    for a_c, alpha in starts:
        theta0 = [a_c, alpha] + ([] if b is not None else [math.log(b_start)])
        res = minimize(_objective, np.array(theta0), args=(u, y, e_fixed, delta), jac=True,
                       method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-9})
        if best is None or res.fun < best.fun:
            best = res
    a_c, alpha = float(best.x[0]), float(best.x[1])
    b_hat = float(b) if b is not None else math.exp(float(best.x[2]))
    return PowerLaw(A=math.exp(a_c + alpha * x0), alpha=alpha, b=b_hat, b_fixed=b is not None,
                    n_points=int(x.size), objective=float(best.fun) / x.size)


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
    obj = _batch_objective(theta, u, y, np.eye(2)[group], ones, math.log(b), delta)[0]
    a_dc, a_lc, alpha = (float(v) for v in theta[int(np.argmin(obj))])
    return SharedExponent(A_dense=math.exp(a_dc + alpha * x0), A_lev=math.exp(a_lc + alpha * x0),
                          alpha=alpha, b=float(b), multiplier=math.exp((a_dc - a_lc) / alpha),
                          n_dense=int(n_dense.size), n_lev=int(n_lev.size))


def effective_size(fit: PowerLaw, loss, params) -> tuple[np.ndarray, np.ndarray]:
    """N_eff = (A / (L - b))^(1/alpha) and the multiplier N_eff / N (NaN where L <= b)."""
    n_eff = fit.inverse(loss)
    with np.errstate(invalid="ignore", over="ignore"):
        return n_eff, n_eff / np.asarray(params, dtype=float)
