"""Data scaling: L(D) per size, the joint L(N, D), and the data multipliers (how many tokens
Dense of the same size needs to reach each run's loss).

`size_laws`: L(D) = E_N + B·D^-beta (E_N free) per (arm, size) with three or more token budgets.
`joint_law`: the joint L(N, D) on a family's Dense runs where sizes and budgets both vary (Epoch
AI's procedure, analysis/laws/joint.py); analysis.readings.paper_view.with_joint reads each
Leviathan run's second N_eff off it, at the run's own D. `data_multipliers` reads D_eff off it.

At a fixed size N the loss levels off at E + A·N^-alpha, not at E: pinning the asymptote at
b = 1.69 bends L(D) and invents an advantage that shrinks with tokens. So the Dense law of a
size is read with its asymptote free:
- one size (or no joint fit): L(D) = E_N + B·D^-beta on that size's Dense runs, E_N fitted
  (analysis.laws.powerlaw with b free; needs three or more budgets);
- two or more Dense sizes with several budgets: the joint L(N, D) = E + A·N^-alpha + B·D^-beta
  (analysis/laws/joint.py) at the Dense N of the size, so that E_N = E + A·N^-alpha is tied across
  sizes.
D_eff solves L_Dense(N, D_eff) = the run's loss; the data multiplier is D_eff / D. One row per
non-Dense run of a size whose Dense runs have several budgets.

Intervals with the headline's run-to-run noise (analysis/readings/noise.py `reading_replicates`,
issue 37.5): the sweep's seeds per arm under fit.noise_model, or a level given with
fit.seed_noise / --noise-from (a one-seed data-scaling grid), every run's loss redrawn around its
(arm, size, budget)'s mean and the Dense law refitted on each replicate; each run's own loss takes
one run's noise and its D_eff is read off the refitted law. With neither, the Dense budgets are
resampled: the fit's spread only, labelled "fit only (excludes run-to-run noise)" as the headline
(on the one-seed grid such intervals covered the true 2x in 60-86% of ladders; with a given level
they cover >= 90% at every budget: docs/coverage/). A D_eff beyond the Dense budgets of its size is
marked `extrapolated`, with the factor (`extrapolation`, analysis/laws/extrapolation.py); beyond
EXTRAPOLATION it is not reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.inputs.runs import budget_ids
from analysis.laws import lm
from analysis.laws.bootstrap import interval_bounds, percentile_interval, resample_counts
from analysis.laws.extrapolation import EXTRAPOLATION, factor, outside
from analysis.laws.joint import HUBER_DELTA as EPOCH_DELTA
from analysis.laws.joint import JointFit, bootstrap_joint, fit_joint, refit_joint
from analysis.laws.powerlaw import (
    ALPHA_BOUNDS,
    FitError,
    PowerLaw,
    degenerate,
    fit_power_law,
    x_eff,
)
from analysis.readings.noise import one_run_draws, reading_replicates

COLUMNS = ["arm", "size", "run_id", "name", "seed", "params", "dense_params", "tokens", "loss",
           "law", "dense_tokens_lo", "dense_tokens_hi", "d_eff", "d_eff_lo", "d_eff_hi",
           "data_multiplier", "data_multiplier_lo", "data_multiplier_hi", "interval",
           "extrapolated", "extrapolation", "reason"]
PER_SIZE, JOINT = "L(D) at this size, E_N free", "joint L(N, D)"
MAX_REPLICATES = 1000


def fit_size_ld(runs: pd.DataFrame, delta: float) -> PowerLaw:
    """L(D) = E_N + B·D^-beta on one (arm, size)'s runs, E_N free (PowerLaw: A = B,
    alpha = beta, b = E_N). FitError with fewer than three budgets."""
    return fit_power_law(runs["tokens"], runs["loss"], b=None, delta=delta)


def refit_size_ld(tokens, y, weights, fit: PowerLaw, delta: float) -> np.ndarray:
    """(R, 3) samples of (B, beta, E_N): L(D) refitted from `fit` on each row of weights (R, n)
    with log losses y (n,) or (R, n), all rows at once (analysis.laws.lm), E_N kept below every
    loss."""
    lx = np.log(np.asarray(tokens, float))
    x0 = float(lx.mean())
    u, y = lx - x0, np.asarray(y, float)
    e_max = float(y.min()) - 1e-9
    start = [math.log(fit.A) - fit.alpha * x0, fit.alpha, min(math.log(fit.b), e_max - 1e-6)]

    def residuals(th, rows):
        t1 = th[:, :1] - th[:, 1:2] * u
        pred = np.logaddexp(t1, th[:, 2:3])
        w = np.exp(t1 - pred)
        return pred - (y if y.ndim == 1 else y[rows]), np.stack([w, -w * u, 1.0 - w], axis=-1)

    theta, _ = lm.solve(residuals, np.tile(start, (weights.shape[0], 1)), delta=delta,
                        weights=weights, iters=200, lower=[-50.0, ALPHA_BOUNDS[0], math.log(1e-3)],
                        upper=[50.0, ALPHA_BOUNDS[1], e_max])
    return np.column_stack([np.exp(theta[:, 0] + theta[:, 1] * x0), theta[:, 1],
                            np.exp(theta[:, 2])])


def joint_d_eff(E, A, B, alpha, beta, n, loss):
    """D at which E + A·n^-alpha + B·D^-beta = loss, broadcasting; NaN where the loss is at or
    below what size n reaches with unlimited tokens."""
    with np.errstate(all="ignore"):
        gap = loss - E - A * n ** -alpha
        return np.where(gap > 0, (B / gap) ** (1.0 / beta), np.nan)


class _Replicates:
    """The family's replicate losses, drawn with the headline's run-to-run noise
    (analysis.readings.noise.reading_replicates: the sweep's seeds per arm, or a given level),
    each (arm, size, budget) its own group; None without either (then the Dense points are
    case-resampled instead: the fit's spread only)."""

    def __init__(self, dense: pd.DataFrame, arms: pd.DataFrame, cfg, rng, lr_miss=None):
        self.runs = pd.concat([dense, arms], ignore_index=True)
        self.nd, self.rng = len(dense), rng
        self.n_rep = min(cfg.bootstrap, MAX_REPLICATES)
        ids = np.zeros(len(self.runs), int)
        for _, g in self.runs.groupby("size"):
            ids[g.index] = budget_ids(g["tokens"].to_numpy(), cfg.budget_tol)
        self.budget = ids
        self.groups = (self.runs["arm"] + "|" + self.runs["size"] + "|"
                       + pd.Series(ids).astype(str)).to_numpy()
        self.reps, self.noise = reading_replicates(self.runs.assign(budget=ids), cfg, self.n_rep,
                                                   rng, within="budget", lr_miss=lr_miss)
        self.interval = self.noise.source

    def dense(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log losses (n,) or (R, n), weights (R, n)) of the Dense runs in `mask` (Dense rows)."""
        loss = self.runs["loss"].to_numpy(float)[: self.nd][mask]
        if self.reps is not None:
            return np.log(self.reps[:, : self.nd][:, mask]), np.ones((self.n_rep, int(mask.sum())))
        sub = self.runs.iloc[: self.nd][mask]
        labels = (sub["size"] + "|" + pd.Series(self.budget[: self.nd][mask],
                                                index=sub.index).astype(str)).to_numpy()
        return np.log(loss), resample_counts(labels, self.n_rep, self.rng).astype(float)

    def arm_loss(self, idx: np.ndarray) -> np.ndarray:
        """(R, m) replicate losses of the arm runs at rows `idx` of `arms`: each run's own loss
        with one run's noise drawn (analysis.readings.noise.one_run_draws: a reading of one run
        carries one seed's noise); fixed without noise."""
        loss = self.runs["loss"].to_numpy(float)
        if self.reps is not None:
            return one_run_draws(loss, self.reps, self.groups)[:, self.nd + idx]
        return np.tile(loss[self.nd + idx], (self.n_rep, 1))


def _reason(loss: float, d_eff: float, floor: float, bad_fit: str, lo: float, hi: float) -> str:
    if bad_fit:
        return bad_fit
    if not loss > floor:
        return (f"loss {loss:.4f} <= {floor:.4f}, what Dense of this size reaches with "
                "unlimited tokens: D_eff undefined")
    if not np.isfinite(d_eff) or d_eff <= 0:
        return "D_eff overflows: the Dense law does not reach this loss"
    if not lo / EXTRAPOLATION <= d_eff <= hi * EXTRAPOLATION:
        return (f"D_eff = {d_eff:.3g} is over {EXTRAPOLATION:g}x outside the Dense budgets "
                f"({lo:.3g}..{hi:.3g}): not extrapolated")
    return ""


def _joint_samples(joint, reps: _Replicates) -> dict[str, np.ndarray]:
    """The joint law refitted on every replicate of the family's Dense runs."""
    y, w = reps.dense(np.ones(reps.nd, bool))
    dense = reps.runs.iloc[: reps.nd]
    return refit_joint(dense["params"], dense["tokens"], np.exp(y), w, joint, delta=EPOCH_DELTA)


def _size_law(joint, s, size: str, dense_mask: np.ndarray, n: float, reps: _Replicates, cfg):
    """(law, point D_eff function, replicate D_eff function, asymptote, why no reading): off
    the joint law (with its replicate samples s) when fitted, else off this size's L(D)."""
    d = reps.runs.iloc[: reps.nd][dense_mask]
    if joint is not None:
        j = joint
        return (JOINT, lambda loss: joint_d_eff(j.E, j.A, j.B, j.alpha, j.beta, n, loss),
                lambda loss: joint_d_eff(*(s[k][:, None] for k in ("E", "A", "B", "alpha",
                                                                   "beta")), n, loss),
                j.E + j.A * n ** -j.alpha, "")
    try:
        f = fit_size_ld(d, cfg.delta)
    except FitError as err:
        return PER_SIZE, None, None, math.nan, f"L(D) at {size} with E_N free: {err}"
    if degenerate(f):
        return PER_SIZE, None, None, f.b, f"Dense L(D) degenerate (beta = {f.alpha:.3g})"
    y, w = reps.dense(dense_mask)
    s = refit_size_ld(d["tokens"], y, w, f, cfg.delta)
    return (PER_SIZE, lambda loss: f.inverse(loss),
            lambda loss: x_eff(s[:, :1], s[:, 1:2], s[:, 2:3], loss), f.b, "")


def size_laws(fam: pd.DataFrame, cfg, rng) -> tuple[tuple[dict, ...], tuple[str, ...]]:
    """(the L(D) fits, notes): L(D) = E_N + B·D^-beta with E_N free per (arm, size) with three or
    more budgets (the asymptote of one size is E + A·N^-alpha, not E: b is never pinned here),
    intervals from the budgets resampled; a note for each (arm, size) with two budgets or a
    failed fit."""
    fits, notes = [], []
    for (arm, size), g in fam.groupby(["arm", "size"]):
        ids = budget_ids(g["tokens"].to_numpy(), cfg.budget_tol)
        if ids.max() < 1:
            continue
        if ids.max() < 2:
            notes.append(f"L(D) {arm} {size}: E_N free needs three or more token budgets; "
                         f"found {ids.max() + 1}")
            continue
        try:
            f = fit_size_ld(g, cfg.delta)
        except FitError as err:
            notes.append(f"L(D) {arm} {size}: {err}")
            continue
        counts = resample_counts(ids, cfg.bootstrap, rng).astype(float)
        s = refit_size_ld(g["tokens"], np.log(g["loss"].to_numpy(float)), counts, f, cfg.delta)
        fits.append({"arm": arm, "size": size, "law": PER_SIZE, "B": f.A, "beta": f.alpha,
                     "E_N": f.b, "b": f.b, "n_points": f.n_points,
                     "B_ci": interval_bounds(s[:, 0], cfg.level),
                     "beta_ci": interval_bounds(s[:, 1], cfg.level),
                     "E_N_ci": interval_bounds(s[:, 2], cfg.level),
                     "b_ci": interval_bounds(s[:, 2], cfg.level)})
    return tuple(fits), tuple(notes)


@dataclass(frozen=True)
class JointReading:
    """The joint L(N, D) of a family's Dense runs (None where there is none), its intervals
    (joint_<parameter> -> [lo, hi]), why it failed, and for the per-run table's joint multipliers
    (paper_view.with_joint) the law refitted on every replicate (`samples`: parameter -> (R,))
    with each non-Dense run's own loss redrawn (`run_loss`: run_id -> (R,)); `interval`: the
    noise they were drawn with (seeds | given; fit: none, the Dense runs resampled)."""

    joint: JointFit | None = None
    intervals: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    samples: dict | None = None
    run_loss: dict = field(default_factory=dict)
    interval: str = "fit"
    level: float = 0.95  # of the per-run intervals (fit.level)


JOINT_STREAM = 377  # the joint law's own bootstrap stream: [fit.seed, JOINT_STREAM]


def joint_law(dense: pd.DataFrame, cfg, others: pd.DataFrame | None = None, lr_miss=None
              ) -> JointReading:
    """The joint L(N, D) on every Dense run (Epoch's Huber delta, 1e-3) where there are two
    sizes and six runs or more; a fit whose bootstrap fails is kept without intervals, with the
    note. Intervals with the headline's run-to-run noise (issue 37.5: every run of the family,
    `others` the non-Dense ones, redrawn within its (arm, size, budget), the law refitted on
    each replicate); without seeds or a level, the Dense runs resampled (Epoch's bootstrap)."""
    if dense["params"].nunique() < 2 or len(dense) < 6:
        return JointReading()
    joint = None
    try:
        joint = fit_joint(dense["params"], dense["tokens"], dense["loss"], delta=EPOCH_DELTA)
        reps = None
        if others is not None:
            reps = _Replicates(dense.reset_index(drop=True), others.reset_index(drop=True), cfg,
                               np.random.default_rng([cfg.seed, JOINT_STREAM]), lr_miss)
        if reps is None or reps.reps is None:
            boot = bootstrap_joint(dense["params"], dense["tokens"], dense["loss"], joint,
                                   n_rep=min(cfg.bootstrap, 400), seed=cfg.seed,
                                   delta=EPOCH_DELTA)
            return JointReading(joint, {f"joint_{k}": [v["lo"], v["hi"]]
                                        for k, v in boot.items()})
    except ValueError as err:
        return JointReading(joint, notes=(f"joint L(N, D): {err}",))
    samples = _joint_samples(joint, reps)
    ids = reps.runs["run_id"].to_numpy()[reps.nd:]
    run_loss = dict(zip(ids, reps.arm_loss(np.arange(len(ids))).T, strict=True))
    return JointReading(joint, {f"joint_{k}": interval_bounds(v, cfg.level)
                                for k, v in samples.items()}, samples=samples,
                        run_loss=run_loss, interval=reps.interval, level=cfg.level)


def data_multipliers(joint: JointFit | None, fam: pd.DataFrame, cfg, rng, lr_miss=None
                     ) -> pd.DataFrame | None:
    """One row per non-Dense run (COLUMNS) of each size whose Dense runs have several budgets,
    read off the joint law when fitted, else off that size's L(D); None when no size
    qualifies. Intervals: the headline's run-to-run noise (`interval`: seeds | given), or the
    Dense budgets resampled (`fit`: FIT_ONLY); lr_miss: the LR model the headline was given."""
    dense = fam[fam["arm"] == "dense"]
    if cfg.b is not None:  # as the joint fit's Dense runs (analysis/scaling.py)
        dense = dense[dense["loss"] > cfg.b]
    sizes = [s for s, g in dense.groupby("size")
             if budget_ids(g["tokens"].to_numpy(), cfg.budget_tol).max() >= 1]
    arms = fam[(fam["arm"] != "dense") & fam["size"].isin(sizes)]
    if arms.empty:
        return None
    dense = dense.reset_index(drop=True)
    arms = arms.reset_index(drop=True)
    reps = _Replicates(dense, arms, cfg, rng, lr_miss)
    joint_s = None if joint is None else _joint_samples(joint, reps)
    rows = []
    for size in sizes:
        mask = (dense["size"] == size).to_numpy()
        n = float(dense.loc[mask, "params"].mean())
        law, point, draws, floor, bad = _size_law(joint, joint_s, size, mask, n, reps, cfg)
        lo, hi = (float(f(dense.loc[mask, "tokens"])) for f in (np.min, np.max))
        idx = np.flatnonzero((arms["size"] == size).to_numpy())
        a = arms.iloc[idx]
        d_eff = point(a["loss"].to_numpy(float)) if point else np.full(len(a), np.nan)
        boot = draws(reps.arm_loss(idx)) if draws else np.full((1, len(a)), np.nan)
        for j, run in enumerate(a.itertuples()):
            rows.append(_row(run, n, law, float(d_eff[j]), boot[:, j], floor, bad, lo, hi,
                             reps.interval, cfg.level))
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.sort_values(["dense_params", "arm", "tokens", "seed"], kind="stable",
                           ignore_index=True)


def _row(run, n, law, d_eff, boot, floor, bad, lo, hi, interval, level) -> dict:
    reason = _reason(run.loss, d_eff, floor, bad, lo, hi)
    d_lo, d_hi = percentile_interval(boot, level) if not reason else (math.nan, math.nan)
    far = float(factor(d_eff, lo, hi)) if not reason else math.nan
    return {"arm": run.arm, "size": run.size, "run_id": run.run_id, "name": run.name,
            "seed": run.seed, "params": run.params, "dense_params": n, "tokens": run.tokens,
            "loss": run.loss, "law": law, "dense_tokens_lo": lo, "dense_tokens_hi": hi,
            "d_eff": math.nan if reason else d_eff,
            "d_eff_lo": float(d_lo), "d_eff_hi": float(d_hi),
            "data_multiplier": math.nan if reason else d_eff / run.tokens,
            "data_multiplier_lo": float(d_lo) / run.tokens,
            "data_multiplier_hi": float(d_hi) / run.tokens, "interval": interval,
            "extrapolated": bool(outside(far)), "extrapolation": far, "reason": reason}
