"""Bootstrap over runs (and seeds): resample weights and a vectorised refit of every replicate.

A replicate is a vector of integer counts over the points (the multiplicity each run has in the
resample), so thousands of replicates refit at once: a Gauss-Newton step on the Huber loss with
iteratively reweighted least squares (weight min(1, delta/|r|)), batched over replicates, starting
from the full-data fit. Resampling is two-stage: groups (sizes) with replacement, then the runs
(seeds) inside each chosen group with replacement; with one run per size it is plain case
resampling over runs. Replicates with fewer than two distinct sizes are drawn again.
"""

from __future__ import annotations

import warnings

import numpy as np

from analysis.powerlaw import ALPHA_BOUNDS, HUBER_DELTA


def resample_counts(groups, n_rep: int, rng: np.random.Generator, min_groups: int = 2):
    """(n_rep, n_points) int counts: two-stage bootstrap over `groups` (a label per point)."""
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(labels.size)]
    n = inverse.size
    counts = np.zeros((n_rep, n), dtype=np.int64)
    need = min(min_groups, labels.size)
    for r in range(n_rep):
        for _ in range(100):
            chosen = rng.integers(0, labels.size, labels.size)
            if np.unique(chosen).size >= need:
                break
        for g in chosen:
            idx = members[g]
            np.add.at(counts[r], idx[rng.integers(0, idx.size, idx.size)], 1)
    return counts


def refit_batch(u, y, group, weights, e, start, *, delta: float = HUBER_DELTA, iters: int = 80):
    """Refit log L = logaddexp(a_group - alpha·u, e) for every row of `weights`.

    u, y, group: (n,) centred log x, log L, group index in [0, G). weights: (R, n) counts.
    e: log b (fixed). start: (G + 1,) = (a_0 .. a_{G-1}, alpha). Returns (R, G + 1).
    """
    u, y = np.asarray(u, float), np.asarray(y, float)
    group = np.asarray(group, int)
    weights = np.asarray(weights, float)
    n_rep, n_groups = weights.shape[0], int(group.max()) + 1
    onehot = np.eye(n_groups)[group]  # (n, G)
    theta = np.tile(np.asarray(start, float), (n_rep, 1))  # (R, G+1)
    # groups absent from a replicate keep their start value (no information, singular system)
    present = (weights @ onehot) > 0  # (R, G)
    ridge = 1e-12
    for _ in range(iters):
        a = theta[:, :n_groups] @ onehot.T  # (R, n)
        t1 = a - theta[:, -1:] * u
        pred = np.logaddexp(t1, e)
        r = pred - y
        w = np.exp(t1 - pred)  # d pred / d a
        q = weights * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))  # IRLS weights
        jac = np.concatenate([w[:, :, None] * onehot[None], (-w * u)[:, :, None]], axis=2)
        jq = jac * q[:, :, None]  # (R, n, P)
        h = np.einsum("rnp,rnq->rpq", jq, jac)
        g = np.einsum("rnp,rn->rp", jq, r)
        k = n_groups + 1
        mask = np.concatenate([present, np.ones((n_rep, 1), bool)], axis=1)
        h = h + np.eye(k)[None] * (ridge + (~mask[:, :, None]) * 1.0)
        g = np.where(mask, g, 0.0)
        step = np.linalg.solve(h, -g[:, :, None])[:, :, 0]
        theta = theta + step
        theta[:, -1] = np.clip(theta[:, -1], *ALPHA_BOUNDS)
        if np.max(np.abs(step)) < 1e-10:
            break
    return theta


def percentile_interval(samples, level: float = 0.95, axis: int = 0):
    """(lo, hi) percentile interval over `axis`, ignoring NaN and inf (all-NaN -> NaN)."""
    samples = np.asarray(samples, float)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(np.where(np.isfinite(samples), samples, np.nan), q, axis=axis)
    return lo, hi
