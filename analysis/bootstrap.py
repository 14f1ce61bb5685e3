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


def percentile_interval(samples, level: float = 0.95, axis: int = 0):
    """(lo, hi) percentile interval over `axis`, ignoring NaN and inf (all-NaN -> NaN)."""
    samples = np.asarray(samples, float)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(np.where(np.isfinite(samples), samples, np.nan), q, axis=axis)
    return lo, hi
