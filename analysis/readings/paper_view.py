"""The paper's view: Dense L(N) and one effective size per Leviathan run.

N is FitConfig.params (total parameters, as the paper; or body). Every finished Leviathan run
gets N_eff and the multiplier N_eff / N with an interval drawn with the headline's run-to-run
noise (issue 37.5; analysis.readings.noise.reading_replicates): every Dense run's loss redrawn and
the Dense law refitted, the run's own loss redrawn with one run's noise at its (arm, size)'s level
and its (arm, size)'s LR-rule miss (columns `seed_noise`, `lr_miss`; `interval`: seeds | given);
with neither seeds nor a given level, the Dense sizes resampled and the run's loss fixed, labelled
"fit only (excludes run-to-run noise)" (`fit`). (It resampled the run's seed group before: two
runs at 421M, and its interval covered 82% in the power model's world.) Alpha on the Leviathan
runs alone; the shared-exponent multiplier with a bootstrap and a lack-of-fit (Student-t)
interval; the multipliers' sensitivity to b. An N_eff beyond the Dense sizes is marked
`extrapolated`, with the factor (`extrapolation`, analysis/laws/extrapolation.py). `paper_view`
returns all of it as one PaperView; the per-run table then gains the runs below their size's L(N)
budget (`with_off_ladder`) and each run's second N_eff off the joint L(N, D) (`with_joint`, with
its interval drawn the same way). The three matchings and the
controls are analysis/readings/matchings.py and analysis/readings/controls.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.config import FitConfig
from analysis.laws.bootstrap import (
    dense_draws,
    interval_bounds,
    percentile_interval,
    resample_counts,
)
from analysis.laws.extrapolation import EXTRAPOLATION, factor, outside
from analysis.laws.powerlaw import (
    FitError,
    PowerLaw,
    SharedExponent,
    degenerate,
    effective_size,
    fit_power_law,
    fit_shared_exponent,
    refit_batch,
    refit_free_b,
    shared_lack_of_fit,
)
from analysis.readings.noise import Noise, one_run_draws, reading_replicates

RUN_STREAM = 375  # the per-run table's own bootstrap stream: [fit.seed, RUN_STREAM]


def _advance(lev: pd.DataFrame, n_rep: int, rng, b: float) -> None:
    """Draw from the shared bootstrap stream what the per-run table drew before it had a stream
    of its own (for each run above b, a resample of its seed group: rng.choice of the group's
    losses, which draws rng.integers(0, group size)), so that the readings drawn after it (the
    matchings, the headline, the token multiplier) keep their replicates."""
    loss, size = lev["loss"].to_numpy(float), lev["size"].to_numpy()
    tokens = lev["tokens"].to_numpy(float)
    above = loss > b
    for j in np.flatnonzero(above):
        k = int((above & (size == size[j]) & np.isclose(tokens, tokens[j], rtol=0.05,
                                                        equal_nan=True)).sum())
        if k > 1:
            rng.integers(0, k, n_rep)


def bootstrap_dense(dense: pd.DataFrame, fit: PowerLaw, cfg: FitConfig, rng, x: str = "params",
                     groups=None) -> np.ndarray:
    """(R, 3) samples of (A, alpha, b) refitted on resampled runs (x: params or tokens)."""
    n, loss = dense[x].to_numpy(float), dense["loss"].to_numpy(float)
    groups = dense["size"].to_numpy() if groups is None else groups
    counts = resample_counts(groups, cfg.bootstrap, rng)
    if cfg.b is None:  # b fitted too: every replicate at once from the full fit
        return refit_free_b(n, loss, counts, fit, delta=cfg.delta)
    lx = np.log(n)
    x0 = float(lx.mean())
    theta = refit_batch(lx - x0, np.log(loss), np.zeros(n.size, int), counts, math.log(fit.b),
                        [math.log(fit.A) - fit.alpha * x0, fit.alpha], delta=cfg.delta)
    return np.column_stack([np.exp(theta[:, 0] + theta[:, 1] * x0), theta[:, 1],
                            np.full(len(theta), fit.b)])


@dataclass(frozen=True)
class PaperView:
    """What the paper's view reads off one family's Dense ladder and Leviathan runs."""

    dense: PowerLaw  # L(N) on the Dense ladder (N = FitConfig.params)
    dense_samples: np.ndarray  # (R, 3) bootstrap A, alpha, b
    intervals: dict  # A, alpha (b), alpha_lev, A_lev, shared_* -> [lo, hi]
    multipliers: pd.DataFrame  # one row per Leviathan run (the paper's table)
    lev: PowerLaw | None  # L(N) on the Leviathan runs alone
    shared: SharedExponent | None
    b_sensitivity: pd.DataFrame  # run x b -> multiplier
    notes: tuple[str, ...]


def paper_view(dense: pd.DataFrame, lev: pd.DataFrame, cfg: FitConfig, rng, lr_miss=None,
               context: pd.DataFrame | None = None) -> PaperView:
    """The Dense L(N) of the ladder `dense` and what it says of each run of `lev`; lr_miss,
    context: the LR model and the family's other runs the headline reads its run-to-run noise
    from (the per-run intervals'; None: fit.lr_miss, these runs alone)."""
    notes = []
    fit = fit_power_law(dense["params"], dense["loss"], b=cfg.b, delta=cfg.delta)
    samples = bootstrap_dense(dense, fit, cfg, rng)
    intervals = {"A": interval_bounds(samples[:, 0], cfg.level),
                 "alpha": interval_bounds(samples[:, 1], cfg.level)}
    if cfg.b is None:
        intervals["b"] = interval_bounds(samples[:, 2], cfg.level)
    flat = degenerate(fit)
    if flat:
        notes.append(f"Dense L(N) fit is degenerate (alpha = {fit.alpha:.3g} at its bound): "
                     "the Dense losses do not fall with N as a power law, so no N_eff")
    _advance(lev, len(samples), rng, fit.b)
    multipliers = _run_multipliers(fit, samples, dense, lev, cfg, flat, lr_miss, context)
    ok = lev[lev["loss"] > fit.b]
    lev_fit, lev_intervals, lev_notes = _fit_lev_alone(lev, ok, fit, cfg, rng)
    intervals.update(lev_intervals)
    notes += lev_notes
    shared = None
    if len(ok) and not flat:
        shared, shared_intervals = _fit_shared(dense, ok, fit.b, cfg, rng)
        intervals.update(shared_intervals)
        if degenerate(shared):
            notes.append(f"shared-exponent fit degenerate (alpha = {shared.alpha:.3g}); "
                         "not reported")
            shared = None
    return PaperView(fit, samples, intervals, multipliers, lev_fit, shared,
                     _b_sensitivity(dense, lev, cfg), tuple(notes))


def with_off_ladder(multipliers: pd.DataFrame, lev: pd.DataFrame, lev_ln: pd.DataFrame
                    ) -> pd.DataFrame:
    """The paper's table with the Leviathan runs of `lev` below their size's L(N) budget (not in
    `lev_ln`), each with the reason and no multiplier."""
    off = lev[~lev["run_id"].isin(lev_ln["run_id"])]
    if not len(off):
        return multipliers
    extra = off[["run_id", "name", "size", "pair", "seed", "params", "tokens", "loss"]]
    extra = extra.assign(reason="token budget below this size's L(N) ladder: see the "
                                "joint L(N, D) fit", extrapolated=False)
    return pd.concat([multipliers, extra], ignore_index=True)


def with_joint(multipliers: pd.DataFrame, joint, dense: pd.DataFrame) -> pd.DataFrame:
    """The paper's table with a second estimate per run: N_eff off the joint L(N, D) fitted on
    the Dense runs `dense`, at the run's own D, marked where it lies outside those runs; with
    its interval where `joint` (a JointReading, analysis/readings/data_multipliers.py) carries
    the law refitted with the headline's run-to-run noise (`interval_joint`: seeds | given;
    fit: none, "fit only"). `joint`: that reading, or a bare JointFit (no intervals)."""
    if not len(multipliers):
        return multipliers
    reading = joint if hasattr(joint, "joint") else None
    joint = joint.joint if reading is not None else joint
    m = multipliers.copy()
    m["n_eff_joint"] = joint.effective_params(m["loss"], m["tokens"])
    m["multiplier_joint"] = m["n_eff_joint"] / m["params"]
    lo = hi = np.full(len(m), np.nan)
    if reading is not None and reading.samples is not None:
        lo, hi = _joint_intervals(m, reading)
    m["multiplier_joint_lo"], m["multiplier_joint_hi"] = lo / m["params"], hi / m["params"]
    m["interval_joint"] = "fit" if reading is None else reading.interval
    # outside the Dense points in N (N_eff) or in D (the run's own tokens): the larger factor
    far = np.fmax(factor(m["n_eff_joint"], dense["params"].min(), dense["params"].max()),
                  factor(m["tokens"], dense["tokens"].min(), dense["tokens"].max()))
    m["extrapolation_joint"] = np.where(np.isfinite(m["n_eff_joint"]), far, np.nan)
    m["extrapolated_joint"] = outside(m["extrapolation_joint"])
    return m


def _joint_intervals(m: pd.DataFrame, reading) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of each run's N_eff off the joint law, over its replicates: the law's samples
    and the run's own loss redrawn (NaN where the run has no draws)."""
    s = reading.samples
    lo, hi = np.full(len(m), np.nan), np.full(len(m), np.nan)
    for j, (run, tokens) in enumerate(zip(m["run_id"], m["tokens"], strict=True)):
        loss = reading.run_loss.get(run)
        if loss is None or not np.isfinite(tokens):
            continue
        with np.errstate(all="ignore"):
            gap = loss - s["E"] - s["B"] * float(tokens) ** -s["beta"]
            n = np.where(gap > 0, (s["A"] / gap) ** (1.0 / s["alpha"]), np.nan)
        lo[j], hi[j] = percentile_interval(n, reading.level)
    return lo, hi


def _run_multipliers(fit: PowerLaw, samples: np.ndarray, dense: pd.DataFrame,
                     lev: pd.DataFrame, cfg: FitConfig, flat: bool, lr_miss=None,
                     context: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's table: every finished Leviathan run's N_eff and multiplier with its interval
    (module docstring), NaN with a reason where N_eff is undefined or extrapolated."""
    m = lev[["run_id", "name", "size", "pair", "seed", "params", "tokens", "loss"]].copy()
    n_eff, mult = effective_size(fit, m["loss"], m["params"])
    draws, noise = _run_draws(fit, samples, dense, lev, cfg, lr_miss, context)
    with np.errstate(all="ignore"):
        gap = draws["loss"] - draws["curve"][:, 2:3]
        n_eff_s = np.exp((np.log(draws["curve"][:, 0:1]) - np.log(gap)) / draws["curve"][:, 1:2])
        n_eff_s = np.where(gap > 0, n_eff_s, np.nan)
    lo, hi = percentile_interval(n_eff_s, cfg.level)
    dense_loss = dense.groupby("size")["loss"].mean()
    dense_n = dense.groupby("size")["params"].mean()
    m["dense_params"] = m["size"].map(dense_n)
    m["dense_loss"] = m["size"].map(dense_loss)
    m["n_eff"], m["n_eff_lo"], m["n_eff_hi"] = n_eff, lo, hi
    m["multiplier"], m["multiplier_lo"], m["multiplier_hi"] = (
        mult, lo / m["params"].to_numpy(), hi / m["params"].to_numpy())
    groups = ("leviathan|" + lev["size"].astype(str)).to_numpy()
    m["interval"] = noise.source
    m["seed_noise"] = [_level(noise, g) for g in groups]
    m["lr_miss"] = [noise.lr_miss if g in noise.unswept else 0.0 for g in groups]
    n_range = (float(dense["params"].min()), float(dense["params"].max()))
    m["reason"] = [_multiplier_reason(row, fit, flat, n_range) for row in m.itertuples()]
    for col in ("n_eff", "multiplier"):
        m.loc[m["reason"] != "", col] = np.nan
    m["extrapolation"] = factor(m["n_eff"], *n_range)  # NaN where there is no N_eff
    m["extrapolated"] = outside(m["extrapolation"])
    return m.sort_values(["params", "name", "run_id"]).reset_index(drop=True)


def _level(noise: Noise, group: str) -> float:
    """The relative sd of one run's loss at an (arm, size) as the Noise reads it (NaN: none)."""
    if group in noise.by_size:
        return float(np.ravel(noise.by_size[group][0])[0])
    return float(noise.levels.get(group.split("|", 1)[0], math.nan))


def _run_draws(fit: PowerLaw, samples: np.ndarray, dense: pd.DataFrame, lev: pd.DataFrame,
               cfg: FitConfig, lr_miss=None, context: pd.DataFrame | None = None
               ) -> tuple[dict, Noise]:
    """({'curve': (R, 3) Dense (A, alpha, b), 'loss': (R, n_lev) each Leviathan run's loss},
    the Noise): with run-to-run noise (the headline's, on the table's own stream) the Dense law
    refitted on every replicate of its runs and each Leviathan run's own loss redrawn with one
    run's noise; without, the bootstrap `samples` and the runs' losses as measured."""
    both = pd.concat([dense.assign(arm="dense"), lev.assign(arm="leviathan")],
                     ignore_index=True)
    reps, noise = reading_replicates(both, cfg, len(samples),
                                     np.random.default_rng([cfg.seed, RUN_STREAM]),
                                     lr_miss=lr_miss, context=context)
    loss = lev["loss"].to_numpy(float)
    if reps is None:
        return {"curve": samples, "loss": np.tile(loss, (len(samples), 1))}, noise
    nd = len(dense)
    x, y = dense["params"].to_numpy(float), reps[:, :nd]
    ok = (y > 0).all(axis=1)
    curve = np.full((len(y), 3), np.nan)
    try:
        if cfg.b is None:
            curve[ok] = refit_free_b(x, y[ok], np.ones_like(y[ok]), fit, delta=cfg.delta)
        else:
            ok &= (y > fit.b).all(axis=1)
            curve[ok, :2] = dense_draws(x, np.log(y[ok]), np.ones_like(y[ok]),
                                        [fit.A, fit.alpha], fit.b, cfg.delta)
            curve[:, 2] = fit.b
    except FitError:
        pass
    groups = (both["arm"] + "|" + both["size"].astype(str)).to_numpy()
    return {"curve": curve, "loss": one_run_draws(both["loss"].to_numpy(float), reps,
                                                  groups)[:, nd:]}, noise


def _multiplier_reason(row, fit: PowerLaw, flat: bool, n_range: tuple[float, float]) -> str:
    """Why a Leviathan run has no multiplier ('' when it has one)."""
    n_lo, n_hi = n_range
    if not row.loss > fit.b:
        return f"loss {row.loss:.4f} <= b = {fit.b:.3g}: N_eff undefined"
    if flat:
        return f"Dense L(N) fit degenerate (alpha = {fit.alpha:.3g})"
    if not np.isfinite(row.n_eff) or row.n_eff <= 0:
        return (f"N_eff overflows (alpha = {fit.alpha:.3g}): the Dense fit does not "
                "reach this loss")
    if not n_lo / EXTRAPOLATION <= row.n_eff <= n_hi * EXTRAPOLATION:
        return (f"N_eff = {row.n_eff:.3g} is over {EXTRAPOLATION:g}x outside the "
                f"Dense sizes fitted ({n_lo:.3g}..{n_hi:.3g}): not extrapolated")
    return ""


def _fit_lev_alone(lev: pd.DataFrame, ok: pd.DataFrame, fit: PowerLaw, cfg: FitConfig, rng
                   ) -> tuple[PowerLaw | None, dict, list[str]]:
    """(the exponent on the Leviathan runs above b alone (b as Dense's), its intervals, a note
    why not)."""
    if lev.empty:
        return None, {}, ["no finished Leviathan runs in this family: Dense fit only"]
    if ok["params"].nunique() < 2:
        return None, {}, [f"alpha on Leviathan runs alone needs two Leviathan sizes above b; "
                          f"found {ok['params'].nunique()}"]
    lev_fit = fit_power_law(ok["params"], ok["loss"], b=fit.b, delta=cfg.delta)
    s = bootstrap_dense(ok, lev_fit, replace(cfg, b=fit.b), rng)
    return lev_fit, {"alpha_lev": interval_bounds(s[:, 1], cfg.level),
                     "A_lev": interval_bounds(s[:, 0], cfg.level)}, []


def _fit_shared(dense, lev, b, cfg, rng) -> tuple[SharedExponent, dict]:
    """Both arms on one exponent, with its bootstrap and lack-of-fit intervals."""
    sh = fit_shared_exponent(dense["params"], dense["loss"], lev["params"], lev["loss"], b=b,
                             delta=cfg.delta)
    n = np.concatenate([dense["params"], lev["params"]]).astype(float)
    y = np.log(np.concatenate([dense["loss"], lev["loss"]]).astype(float))
    x0 = float(np.log(n).mean())
    counts = np.concatenate([resample_counts(dense["size"].to_numpy(), cfg.bootstrap, rng),
                             resample_counts(lev["size"].to_numpy(), cfg.bootstrap, rng, 1)],
                            axis=1)
    group = np.r_[np.zeros(len(dense), int), np.ones(len(lev), int)]
    start = [math.log(sh.A_dense) - sh.alpha * x0, math.log(sh.A_lev) - sh.alpha * x0, sh.alpha]
    theta = refit_batch(np.log(n) - x0, y, group, counts, math.log(b), start, delta=cfg.delta)
    with np.errstate(over="ignore"):
        multiplier = interval_bounds(np.exp((theta[:, 0] - theta[:, 1]) / theta[:, 2]),
                                     cfg.level)
    return sh, {"shared_multiplier": multiplier,
                "shared_alpha": interval_bounds(theta[:, 2], cfg.level),
                "shared_multiplier_t": list(shared_lack_of_fit(
                    dense["params"], dense["loss"], lev["params"], lev["loss"], sh, cfg.level))}


def _b_sensitivity(dense, lev, cfg) -> pd.DataFrame:
    rows = {}
    bs = sorted(set(cfg.b_grid) | ({cfg.b} if cfg.b is not None else set()))
    for b in bs:
        d = dense[dense["loss"] > b]
        col = np.full(len(lev), np.nan)
        if d["params"].nunique() >= 2:
            f = fit_power_law(d["params"], d["loss"], b=b, delta=cfg.delta)
            n_eff, col = effective_size(f, lev["loss"], lev["params"])
            lo, hi = d["params"].min() / EXTRAPOLATION, d["params"].max() * EXTRAPOLATION
            col = np.where(degenerate(f) | ~((n_eff >= lo) & (n_eff <= hi)), np.nan, col)
        rows[f"{b:g}"] = col
    out = pd.DataFrame(rows)
    out.insert(0, "size", lev["size"].to_numpy())
    out.insert(0, "run_id", lev["run_id"].to_numpy())
    return out
