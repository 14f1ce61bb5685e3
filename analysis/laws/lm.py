"""The one nonlinear least-squares solver of the analysis: batched Levenberg-Marquardt on a Huber
loss, many independent problems at once.

Every fit here (L(N), L(C), L(D), the shared-exponent fit, the joint L(N, D), and all their
bootstrap replicates and multi-start searches) is `S` small problems with the same model and
different starts, weights or targets. scipy's `least_squares(loss="huber")` solves one problem
per call; a bootstrap of 1,000 replicates or Epoch's 4,500-start grid would loop in Python. So
each iteration advances all S problems with one einsum: the Gauss-Newton system of the
iteratively reweighted Huber loss (weight min(1, delta/|r|)), damped by lambda times the
diagonal, a step kept only where it lowers that problem's objective (lambda / 3 when kept,
x 4 when not). scipy's L-BFGS-B polishes the few final candidates where precision matters.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Residuals = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative, both divided by delta (same minimiser, better scaling)."""
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r * r / delta, np.abs(r) - 0.5 * delta)
    grad = np.where(small, r / delta, np.sign(r))
    return value, grad


def objective(r: np.ndarray, weights, delta: float) -> np.ndarray:
    """(S,) summed weighted Huber loss of residuals r (S, n)."""
    return (weights * huber(r, delta)[0]).sum(axis=-1)


def solve(residuals: Residuals, theta0, *, delta: float, weights=1.0, lower=None, upper=None,
          free=None, lam0: float = 1e-3, iters: int = 100, tol: float = 1e-9):
    """Minimise sum_i w_si Huber(r_si(theta_s)) for every row s; returns (theta (S, k), f (S,)).

    residuals(theta (A, k), rows (A,)) -> (r (A, n), jac (A, n, k)), jac = dr/dtheta, for the
    problems `rows` (indices into the S rows: per-row data such as bootstrap targets is
    indexed by them). weights: scalar or (S, n) (bootstrap multiplicities). lower/upper: (k,)
    bounds (None or +-inf: unbounded), enforced by clipping the trial point. free: (S, k) bool;
    a parameter not free in a row keeps its start (e.g. the scale of a group absent from a
    bootstrap replicate). A row stops once its proposed step is below `tol` (0: never).
    """
    theta = np.array(theta0, dtype=float, copy=True)
    n_rows, k = theta.shape
    lower = np.full(k, -np.inf) if lower is None else np.asarray(lower, float)
    upper = np.full(k, np.inf) if upper is None else np.asarray(upper, float)
    free = np.ones((n_rows, k), bool) if free is None else np.asarray(free, bool)
    weights = np.asarray(weights, float)
    lam = np.full(n_rows, lam0)
    rows = np.arange(n_rows)  # the rows still iterating
    r, jac = residuals(theta, rows)
    f = objective(r, weights, delta)
    eye = np.eye(k)
    for _ in range(iters):
        if rows.size == 0:
            break
        w = weights if weights.ndim == 0 else weights[rows]
        th, fr, la, fa = theta[rows], free[rows], lam[rows], f[rows]
        big = np.abs(r) > delta
        q = w * np.where(big, delta / np.where(big, np.abs(r), 1.0), 1.0)  # IRLS weights
        jq = jac * q[..., None]  # (A, n, k)
        h = np.einsum("snp,snq->spq", jq, jac)
        g = np.where(fr, np.einsum("snp,sn->sp", jq, r), 0.0)
        diag = np.einsum("spp->sp", h)
        h = h + eye * (la[:, None, None] * (diag[:, None, :] + 1e-9) + 1e-12
                       + (~fr[:, :, None]) * 1.0)
        step = np.linalg.solve(h, -g[..., None])[..., 0]
        trial = np.clip(th + step, lower, upper)
        r_t, jac_t = residuals(trial, rows)
        f_t = objective(r_t, w, delta)
        better = np.isfinite(f_t) & (f_t < fa)
        theta[rows] = np.where(better[:, None], trial, th)
        f[rows] = np.where(better, f_t, fa)
        lam[rows] = np.clip(np.where(better, la / 3.0, la * 4.0), 1e-12, 1e12)
        keep = np.abs(step).max(axis=1) >= tol
        r = np.where(better[:, None], r_t, r)[keep]
        jac = np.where(better[:, None, None], jac_t, jac)[keep]
        rows = rows[keep]
    return theta, f
