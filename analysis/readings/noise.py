"""Run-to-run noise: where an interval's noise comes from, per arm.

Every multiplier and LEV-over-control interval must include the scatter a rerun with another
seed would show (SCIENCE.md §3). Three sources, in this order:
- `seeds`: the sweep's own seeds. Each arm's relative deviations from its (arm, size) means,
  pooled over that arm's sizes (not across arms: a 150-layer Leviathan may be noisier than
  Dense), each scaled by sqrt(n / (n - 1)) for the mean it was measured against. An arm with
  one seed everywhere borrows a given level (fit.seed_noise) or, failing that, the other arms'
  deviations pooled, and the summary says so.
- `given`: one seed, and a noise level measured elsewhere: `fit.seed_noise.<arm>` (relative
  standard deviation of the final loss; `fit.seed_noise.all` for every arm not named), or
  `--noise-from <pilot sweep or runs.csv>`, which measures it from a pilot sweep's seeds.
- `fit`: neither: the bootstrap can only resample the Dense sizes, so both arms move together
  through the curve and their ratio barely moves; such an interval is labelled "fit only
  (excludes run-to-run noise)" and the headline shows no LEV/control interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analysis.config import FitConfigError
from analysis.laws.bootstrap import seed_deviations

SOURCES = ("seeds", "given", "fit")
FIT_ONLY = "fit only (excludes run-to-run noise)"
LABELS = {"seeds": "run-to-run noise from the sweep's seeds (per arm)",
          "given": "run-to-run noise from a level measured elsewhere (fit.seed_noise / "
                   "--noise-from)",
          "fit": FIT_ONLY}


@dataclass(frozen=True)
class Noise:
    """The noise every replicate of a run's loss is drawn with."""

    source: str  # seeds | given | fit (SOURCES)
    levels: dict = field(default_factory=dict)  # arm -> relative sd of one run's loss
    notes: tuple[str, ...] = ()  # borrowed levels, missing arms
    dof: dict = field(default_factory=dict)  # arm -> degrees of freedom of its level (inf:
    #   given, known)
    lr_miss: float = 0.0  # the LR rule's miss drawn for the unswept (arm, size) groups
    unswept: tuple[str, ...] = ()  # those groups ("arm|size")

    @property
    def label(self) -> str:
        return LABELS[self.source]


def arm_levels(table: pd.DataFrame) -> dict[str, float]:
    """arm -> relative sd of one run's final loss, from the seeds of each (arm, size), pooled
    over sizes; arms with one seed everywhere are left out. (What --noise-from measures.)"""
    out = {}
    for arm, g in table.groupby("arm", sort=True):
        dev = seed_deviations(g["loss"].to_numpy(float), g["size"].astype(str).to_numpy())
        if dev.size >= 2:
            out[str(arm)] = float(np.sqrt(np.mean(dev ** 2)))
    return out


def _given(arm: str, seed_noise: dict | None) -> float | None:
    if not seed_noise:
        return None
    v = seed_noise.get(arm, seed_noise.get("all"))
    return None if v is None else float(v)


def replicates(both: pd.DataFrame, seed_noise: dict | None, n_rep: int,
               rng: np.random.Generator, lr_miss: float = 0.0
               ) -> tuple[np.ndarray | None, Noise]:
    """(n_rep, n) replicate losses of every run of `both` (arm, size, loss; lr_swept: whether
    its (arm, size) swept LR), and the Noise used; None with source `fit` when there is no noise
    to draw from (batch_replicates, one ladder)."""
    groups = (both["arm"].astype(str) + "|" + both["size"].astype(str)).to_numpy()
    unswept = None
    if "lr_swept" in both and both["lr_swept"].any():
        unswept = ~both["lr_swept"].fillna(False).to_numpy(bool)
    reps, noise = batch_replicates(both["loss"].to_numpy(float)[None, :],
                                   both["arm"].astype(str).to_numpy(), groups, seed_noise,
                                   n_rep, rng, unswept, lr_miss)
    noise = replace(noise, levels={a: float(v[0]) for a, v in noise.levels.items()})
    return (None if reps is None else reps[0]), noise


def batch_replicates(loss: np.ndarray, arms: np.ndarray, groups: np.ndarray,
                     seed_noise: dict | None, n_rep: int, rng: np.random.Generator,
                     unswept: np.ndarray | None = None, lr_miss: float = 0.0
                     ) -> tuple[np.ndarray | None, Noise]:
    """(M, n_rep, n) replicate losses of M ladders of the same runs (loss (M, n); arms, groups
    (n,): each run's arm and (arm, size) group), and the Noise (levels: arm -> (M,) sd).

    Each run's loss is its group mean x (1 + sigma z), z standard normal, sigma its arm's level:
    from the arm's seeds (pooled over its sizes; each replicate draws the level from its own
    uncertainty, a scaled inverse chi-square on the pooled degrees of freedom: t-like tails),
    or given (known: no such draw). Runs flagged `unswept` (their (arm, size) ran the rule's LR
    only, while others swept) are also multiplied by (1 + lr_miss z'), one z' per group and
    replicate: the LR rule's miss of that size's optimum, shared by its seeds."""
    loss = np.atleast_2d(np.asarray(loss, float))
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    onehot = np.eye(counts.size)[inverse]  # (n, G)
    means = (loss @ onehot / counts) @ onehot.T  # (M, n)
    dev = (loss / means - 1.0) * np.sqrt(counts / np.maximum(counts - 1, 1))[inverse]
    have = {}
    for a in np.unique(arms):
        cols = (arms == a) & (counts[inverse] >= 2)
        if cols.any():
            have[a] = (np.sqrt(np.mean(dev[:, cols] ** 2, axis=1)), _dof(groups[arms == a]))
    if not have and not seed_noise:
        return None, Noise("fit")
    levels, dofs, notes, miss, unswept_groups = {}, {}, [], 0.0, ()
    out = np.empty((loss.shape[0], n_rep, loss.shape[1]))
    for a in np.unique(arms):
        cols = np.flatnonzero(arms == a)
        sd, dof, note = _arm_level(a, have, seed_noise)
        notes += [note] if note else []
        sd = np.broadcast_to(np.asarray(sd, float), (loss.shape[0],))
        chi = np.sqrt(dof / rng.chisquare(dof, (loss.shape[0], n_rep, 1))) \
            if np.isfinite(dof) else 1.0
        out[:, :, cols] = means[:, None, cols] * (1.0 + sd[:, None, None] * chi
                                                  * rng.standard_normal((*out.shape[:2],
                                                                         cols.size)))
        levels[a], dofs[a] = sd, dof
    if unswept is not None and lr_miss > 0 and unswept.any():
        for g in np.unique(inverse[unswept]):
            cols = np.flatnonzero(inverse == g)
            out[:, :, cols] *= 1.0 + lr_miss * rng.standard_normal((*out.shape[:2], 1))
        miss, unswept_groups = lr_miss, tuple(sorted({str(x) for x in groups[unswept]}))
    return out, Noise("seeds" if have else "given", levels, tuple(notes), dofs, miss,
                      unswept_groups)


def _dof(groups: np.ndarray) -> float:
    """Degrees of freedom of a noise level pooled over groups: sum of (runs - 1)."""
    _, counts = np.unique(groups, return_counts=True)
    return float(np.sum(counts - 1))


def _arm_level(arm: str, have: dict, seed_noise: dict | None):
    """(sd, degrees of freedom, a note or None) of one run's relative noise in `arm`: its own
    seeds', else a given level (known: infinite dof), else the other arms' pooled (noted)."""
    if arm in have:
        return (*have[arm], None)
    given = _given(arm, seed_noise)
    if given is not None:
        note = (f"{arm}: one seed per size; its noise level {given:g} is given "
                "(fit.seed_noise)") if have else None
        return given, math.inf, note
    if have:
        dof = sum(d for _, d in have.values())
        sd = np.sqrt(sum(s * s * d for s, d in have.values()) / dof)
        return sd, dof, (f"{arm}: one seed per size and no fit.seed_noise.{arm}: its noise is "
                         "borrowed from the other arms' seeds")
    raise_missing(arm, seed_noise)
    return math.nan, math.nan, None  # unreachable: raise_missing raises


def raise_missing(arm: str, seed_noise: dict) -> None:
    raise FitConfigError(f"fit.seed_noise: no level for arm {arm!r} (given: "
                         f"{', '.join(sorted(seed_noise))}); add fit.seed_noise.{arm}=<relative "
                         "sd> or fit.seed_noise.all=<relative sd>")
