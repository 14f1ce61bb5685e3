"""The joint law L(N, D) = E + A·N^-alpha + B·D^-beta, fitted the way Epoch AI refit Chinchilla.

Objective (Besiroglu et al. 2024): sum of Huber(delta = 1e-3) of log L - LSE(a - alpha·log N,
b - beta·log D, e), with A = exp(a), B = exp(b), E = exp(e); minimised by L-BFGS from every point
of a grid of starts (alpha, beta in 0..2 step 0.5; e in -1..1 step 0.5; a, b in 0..25 step 5:
4,500 starts) keeping the best. A loop of 4,500 scipy runs takes minutes, so here every start
advances at once through the analysis' one batched Levenberg-Marquardt solver (analysis.laws.lm, one
einsum per iteration over all starts), then the best few distinct end points are polished with
scipy's L-BFGS-B and the lowest objective wins.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from analysis.laws import lm
from analysis.laws.lm import huber
from analysis.laws.powerlaw import HUBER_DELTA

EPOCH_GRID = {  # Epoch AI's grid of starting points (their notebook)
    "alpha": np.arange(0, 2.5, 0.5),
    "beta": np.arange(0, 2.5, 0.5),
    "e": np.arange(-1, 1.5, 0.5),
    "a": np.arange(0, 30, 5),
    "b": np.arange(0, 30, 5),
}
EPOCH_CHINCHILLA = {  # published estimate (standard error) on the 240 points
    "E": (1.817, 0.026), "A": (482.0, 124.5), "B": (2085.0, 1293.0),
    "alpha": (0.348, 0.015), "beta": (0.366, 0.021),
}


@dataclass
class JointFit:
    """L(N, D) = E + A·N^-alpha + B·D^-beta."""

    E: float  # irreducible loss
    A: float  # parameter-term scale
    B: float  # data-term scale
    alpha: float  # parameter exponent
    beta: float  # data exponent
    n_points: int  # points fitted
    objective: float  # summed Huber loss (Epoch's units, not divided by delta)
    n_starts: int  # starting points tried

    def predict(self, n, d):
        n, d = np.asarray(n, float), np.asarray(d, float)
        return self.E + self.A * n ** -self.alpha + self.B * d ** -self.beta

    def effective_params(self, loss, d):
        """N at which the law reaches `loss` with D tokens; NaN where E + B·D^-beta >= loss."""
        gap = np.asarray(loss, float) - self.E - self.B * np.asarray(d, float) ** -self.beta
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = (self.A / gap) ** (1.0 / self.alpha)
        return np.where(gap > 0, out, np.nan)

    def as_dict(self) -> dict:
        return asdict(self)


def _terms(theta, u, v):
    # theta (S, 5) = (a_c, b_c, e, alpha, beta) with centred u = log N - mN, v = log D - mD
    t1 = theta[:, 0:1] - theta[:, 3:4] * u  # (S, n)
    t2 = theta[:, 1:2] - theta[:, 4:5] * v
    t3 = theta[:, 2:3]
    m = np.maximum(np.maximum(t1, t2), t3)
    z1, z2, z3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(t3 - m)
    tot = z1 + z2 + z3
    return m + np.log(tot), (z1 / tot, z2 / tot, z3 / tot)  # pred (S, n), softmax weights


def _jacobian(s, u, v):
    s1, s2, s3 = s
    return np.stack([s1, s2, s3, -s1 * u, -s2 * v], axis=-1)  # (S, n, 5)


def _scipy_objective(theta, u, v, y, delta):
    pred, s = _terms(theta[None], u, v)
    value, g = huber(pred - y, delta)
    return float(value.sum()), _jacobian(s, u, v)[0].T @ g[0]


def _batched_lm(theta, u, v, y, delta, iters, weights=1.0):
    """All starts (or bootstrap rows, weights (S, n)) advanced together by analysis.laws.lm; y (n,),
    or (S, n): one target per row (seed-noise replicates)."""
    def residuals(th, rows):
        pred, s = _terms(th, u, v)
        return pred - (y if y.ndim == 1 else y[rows]), _jacobian(s, u, v)

    return lm.solve(residuals, theta, delta=delta, weights=weights, lam0=1e-2, iters=iters,
                    tol=0.0, lower=[-np.inf] * 3 + [0.0, 0.0], upper=[np.inf] * 3 + [10.0, 10.0])


def fit_joint(n, d, loss, *, delta: float = HUBER_DELTA, grid: dict | None = None,
              schedule=((200, 2), (30, 15), (30, 40)), polish: int = 8) -> JointFit:
    """Fit L(N, D) from every start of `grid` (Epoch's by default); return the best.

    `schedule`: (starts kept, LM iterations run before keeping them) stages; `polish`: how many
    distinct best end points L-BFGS-B refines.
    """
    from scipy.optimize import minimize

    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    ok = np.isfinite(n) & np.isfinite(d) & np.isfinite(loss) & (n > 0) & (d > 0) & (loss > 0)
    n, d, loss = n[ok], d[ok], loss[ok]
    if n.size < 6 or np.unique(n).size < 2 or np.unique(d).size < 2:
        raise ValueError(f"the joint L(N, D) fit needs >= 6 points over >= 2 values of N and of "
                         f"D; got {n.size} points, {np.unique(n).size} N, {np.unique(d).size} D")
    grid = grid or EPOCH_GRID
    ln, ld = np.log(n), np.log(d)
    mn, md = float(ln.mean()), float(ld.mean())
    u, v, y = ln - mn, ld - md, np.log(loss)
    starts = np.array([(a, b, e, al, be) for al, be, e, a, b in itertools.product(
        grid["alpha"], grid["beta"], grid["e"], grid["a"], grid["b"])], dtype=float)
    theta = starts.copy()
    theta[:, 0] -= theta[:, 3] * mn  # to centred coordinates
    theta[:, 1] -= theta[:, 4] * md
    for keep, iters in schedule:  # advance all starts a little, keep the best, go on
        theta, f = _batched_lm(theta, u, v, y, delta, iters)
        theta = theta[np.argsort(f)[:keep]]
        f = np.sort(f)[:keep]
    order = np.argsort(f)
    chosen: list[np.ndarray] = []
    for i in order:
        if len(chosen) >= polish:
            break
        if all(np.max(np.abs(theta[i] - c)) > 1e-3 for c in chosen):
            chosen.append(theta[i])
    best = None
    for th0 in chosen:
        res = minimize(_scipy_objective, th0, args=(u, v, y, delta), jac=True,
                       method="L-BFGS-B", bounds=[(None, None)] * 3 + [(0, 10), (0, 10)],
                       options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
        if best is None or res.fun < best.fun:
            best = res
    a_c, b_c, e, alpha, beta = (float(x) for x in best.x)
    return JointFit(E=math.exp(e), A=math.exp(a_c + alpha * mn), B=math.exp(b_c + beta * md),
                    alpha=alpha, beta=beta, n_points=int(n.size),
                    objective=float(best.fun) * delta, n_starts=int(starts.shape[0]))


def refit_joint(n, d, loss, weights, fit: JointFit, *, delta: float = HUBER_DELTA,
                iters: int = 40) -> dict[str, np.ndarray]:
    """The law refitted from `fit` once per row of weights (R, n) (bootstrap counts, or ones)
    on loss (n,) or (R, n) (seed-noise replicates): name -> (R,) samples of E, A, B, alpha,
    beta."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    weights = np.asarray(weights, float)
    ln, ld = np.log(n), np.log(d)
    mn, md = float(ln.mean()), float(ld.mean())
    start = np.array([math.log(fit.A) - fit.alpha * mn, math.log(fit.B) - fit.beta * md,
                      math.log(fit.E), fit.alpha, fit.beta])
    theta, _ = _batched_lm(np.tile(start, (weights.shape[0], 1)), ln - mn, ld - md,
                           np.log(loss), delta, iters, weights)
    return {"E": np.exp(theta[:, 2]), "A": np.exp(theta[:, 0] + theta[:, 3] * mn),
            "B": np.exp(theta[:, 1] + theta[:, 4] * md), "alpha": theta[:, 3],
            "beta": theta[:, 4]}


def bootstrap_joint(n, d, loss, fit: JointFit, *, n_rep: int = 200, seed: int = 0,
                    delta: float = HUBER_DELTA, iters: int = 40, level: float = 0.95) -> dict:
    """Standard errors of (E, A, B, alpha, beta) by resampling points, refitting from `fit`."""
    n = np.asarray(n, float)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n.size, n.size), minlength=n.size)
                       for _ in range(n_rep)]).astype(float)
    samples = refit_joint(n, d, loss, counts, fit, delta=delta, iters=iters)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {k: {"se": float(np.std(x, ddof=1)), "lo": float(np.percentile(x, q[0])),
                "hi": float(np.percentile(x, q[1]))} for k, x in samples.items()}
