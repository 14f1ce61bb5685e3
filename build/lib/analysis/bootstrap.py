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

from analysis.powerlaw import refit_batch  # noqa: F401 - re-exported for the callers


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
