"""Bootstrap over runs and seeds: resample weights, seed-noise replicates, percentile intervals.

Two ways to make a replicate, both refitted all at once by analysis.laws.lm:
- case resampling (`resample_counts`): a vector of integer counts over the points, two-stage:
  groups (sizes) with replacement, then the runs (seeds) inside each chosen group; with one run
  per size it is plain case resampling over runs (the fit's spread only: no run-to-run noise
  can be seen with one seed). Replicates with fewer than two distinct sizes are drawn again.
- seed-noise resampling (`seed_noise_replicates`): with several seeds, every run's loss is
  replaced by its group's (arm, size) mean times (1 + e), e drawn from the seeds' relative
  deviations from their group means, pooled over all groups (a noise level estimated from all
  of them, each deviation scaled by sqrt(n / (n - 1)) for the mean it was measured against).
  This puts the run-to-run noise of both arms into every interval, through the Dense fit too.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from analysis.laws.powerlaw import refit_batch


def resample_counts(groups, n_rep: int, rng: np.random.Generator, min_groups: int = 2):
    """(n_rep, n_points) int counts: two-stage bootstrap over `groups` (a label per point)."""
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_groups, n = labels.size, inverse.size
    need = min(min_groups, n_groups)
    chosen = rng.integers(0, n_groups, (n_rep, n_groups))  # stage 1: sizes with replacement
    for _ in range(100):
        distinct = np.array([np.unique(c).size for c in chosen])
        bad = distinct < need
        if not bad.any():
            break
        chosen[bad] = rng.integers(0, n_groups, (int(bad.sum()), n_groups))
    counts = np.zeros((n_rep, n), dtype=np.int64)
    for g in range(n_groups):  # stage 2: each chosen size resamples its runs (seeds)
        members = np.flatnonzero(inverse == g)
        rows, _ = np.nonzero(chosen == g)
        if rows.size == 0:
            continue
        picks = members[rng.integers(0, members.size, (rows.size, members.size))]
        np.add.at(counts, (np.repeat(rows, members.size), picks.ravel()), 1)
    return counts


def percentile_interval(samples, level: float = 0.95, axis: int = 0):
    """(lo, hi) percentile interval over `axis`, ignoring NaN and inf (all-NaN -> NaN)."""
    samples = np.asarray(samples, float)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    if samples.size == 0:
        empty = np.full(np.delete(samples.shape, axis), np.nan)
        return empty, empty.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(np.where(np.isfinite(samples), samples, np.nan), q, axis=axis)
    return lo, hi


def interval_bounds(samples, level):
    lo, hi = percentile_interval(samples, level)
    return [float(lo), float(hi)]


def seed_deviations(loss, groups) -> np.ndarray:
    """Relative deviations of runs from their group mean, from groups with two or more runs,
    each scaled by sqrt(n / (n - 1)); empty when every group has one run."""
    loss = np.asarray(loss, float)
    labels, inverse, counts = np.unique(np.asarray(groups), return_inverse=True,
                                        return_counts=True)
    means = np.bincount(inverse, weights=loss) / counts
    n = counts[inverse]
    keep = n >= 2
    return (loss[keep] / means[inverse][keep] - 1.0) * np.sqrt(n[keep] / (n[keep] - 1.0))


def seed_noise_replicates(loss, groups, n_rep: int, rng: np.random.Generator,
                          deviations: np.ndarray | None = None):
    """(n_rep, n) replicate losses: group mean x (1 + pooled deviation); None without seeds."""
    loss = np.asarray(loss, float)
    dev = seed_deviations(loss, groups) if deviations is None else deviations
    if dev.size == 0:
        return None
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    means = (np.bincount(inverse, weights=loss) / counts)[inverse]
    return means[None, :] * (1.0 + rng.choice(dev, (n_rep, loss.size)))


def dense_draws(x, y, weights, start, b: float, delta: float) -> np.ndarray:
    """(R, 2) bootstrap (A, alpha): the Dense curve refitted on every row of y (R, n) (or one
    y (n,)) with point weights (R, n), from start (A, alpha) per row (R, 2) or shared (2,)."""
    lx = np.log(np.asarray(x, float))
    u0 = float(lx.mean())
    start = np.atleast_2d(np.asarray(start, float))
    theta = refit_batch(lx - u0, y, np.zeros(lx.size, int), weights, math.log(b),
                        np.column_stack([np.log(start[:, 0]) - start[:, 1] * u0, start[:, 1]]),
                        delta=delta)
    return np.column_stack([np.exp(theta[:, 0] + theta[:, 1] * u0), theta[:, 1]])
