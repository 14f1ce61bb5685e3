"""The paper's view: Dense L(N) and one effective size per Leviathan run.

N is FitConfig.params (total parameters, as the paper; or body). Every finished Leviathan run
gets N_eff and the multiplier N_eff / N with a bootstrap interval (Dense sizes and seeds
resampled, the run's own loss drawn from its seed group); alpha on the Leviathan runs alone;
the shared-exponent multiplier with a bootstrap and a lack-of-fit (Student-t) interval; the
multipliers' sensitivity to b. An N_eff beyond the Dense sizes is marked `extrapolated`, with the
factor (`extrapolation`, analysis/laws/extrapolation.py). The three matchings and the controls are
analysis/readings/matchings.py and analysis/readings/controls.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.family import FamilyResult, FitConfig
from analysis.laws.bootstrap import interval_bounds, percentile_interval, resample_counts
from analysis.laws.extrapolation import EXTRAPOLATION, factor, outside
from analysis.laws.powerlaw import (
    PowerLaw,
    degenerate,
    effective_size,
    fit_power_law,
    fit_shared_exponent,
    refit_batch,
    refit_free_b,
    shared_lack_of_fit,
)


def _lev_loss_draws(lev: pd.DataFrame, n_rep: int, rng, b: float) -> np.ndarray:
    """(R, n_lev): each run's own loss, or a draw from its seed group (runs above b)."""
    draws = np.tile(lev["loss"].to_numpy(float), (n_rep, 1))
    for j, (_, row) in enumerate(lev.iterrows()):
        if not row["loss"] > b:
            continue
        group = lev[(lev["size"] == row["size"]) & (lev["loss"] > b) & np.isclose(
            lev["tokens"], row["tokens"], rtol=0.05, equal_nan=True)]
        if len(group) > 1:
            draws[:, j] = rng.choice(group["loss"].to_numpy(float), n_rep)
    return draws


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


def fit_ln(res: FamilyResult, dense: pd.DataFrame, lev: pd.DataFrame, cfg: FitConfig, rng):
    fit, samples = _fit_dense_ln(res, dense, cfg, rng)
    flat = degenerate(fit)
    res.multipliers = _run_multipliers(res, fit, samples, dense, lev, cfg, rng, flat)
    ok = lev[lev["loss"] > fit.b]
    _fit_lev_alone(res, lev, ok, fit, cfg, rng)
    if len(ok) and not flat:
        _fit_shared(res, dense, ok, fit.b, cfg, rng)
        if degenerate(res.shared):
            res.notes.append(f"shared-exponent fit degenerate (alpha = {res.shared.alpha:.3g}); "
                             "not reported")
            res.shared = None
    res.b_sensitivity = _b_sensitivity(dense, lev, cfg)


def _fit_dense_ln(res: FamilyResult, dense: pd.DataFrame, cfg: FitConfig, rng):
    """Dense L(N) and its bootstrap: (fit, (R, 3) samples); intervals of A, alpha (and b)."""
    fit = fit_power_law(dense["params"], dense["loss"], b=cfg.b, delta=cfg.delta)
    res.dense = fit
    samples = bootstrap_dense(dense, fit, cfg, rng)
    res.dense_samples = samples
    res.intervals["A"] = interval_bounds(samples[:, 0], cfg.level)
    res.intervals["alpha"] = interval_bounds(samples[:, 1], cfg.level)
    if cfg.b is None:
        res.intervals["b"] = interval_bounds(samples[:, 2], cfg.level)
    return fit, samples


def _run_multipliers(res: FamilyResult, fit: PowerLaw, samples: np.ndarray,
                     dense: pd.DataFrame, lev: pd.DataFrame, cfg: FitConfig, rng,
                     flat: bool) -> pd.DataFrame:
    """The paper's table: every finished Leviathan run's N_eff and multiplier with bootstrap
    intervals, NaN with a reason where N_eff is undefined or extrapolated."""
    m = lev[["run_id", "name", "size", "pair", "seed", "params", "tokens", "loss"]].copy()
    n_eff, mult = effective_size(fit, m["loss"], m["params"])
    draws = _lev_loss_draws(lev, len(samples), rng, fit.b)
    with np.errstate(all="ignore"):
        gap = draws - samples[:, 2:3]
        n_eff_s = np.exp((np.log(samples[:, 0:1]) - np.log(gap)) / samples[:, 1:2])
        n_eff_s = np.where(gap > 0, n_eff_s, np.nan)
    lo, hi = percentile_interval(n_eff_s, cfg.level)
    dense_loss = dense.groupby("size")["loss"].mean()
    dense_n = dense.groupby("size")["params"].mean()
    m["dense_params"] = m["size"].map(dense_n)
    m["dense_loss"] = m["size"].map(dense_loss)
    m["n_eff"], m["n_eff_lo"], m["n_eff_hi"] = n_eff, lo, hi
    m["multiplier"], m["multiplier_lo"], m["multiplier_hi"] = (
        mult, lo / m["params"].to_numpy(), hi / m["params"].to_numpy())
    if flat:
        res.notes.append(f"Dense L(N) fit is degenerate (alpha = {fit.alpha:.3g} at its bound): "
                         "the Dense losses do not fall with N as a power law, so no N_eff")
    n_range = (float(dense["params"].min()), float(dense["params"].max()))
    m["reason"] = [_multiplier_reason(row, fit, flat, n_range) for row in m.itertuples()]
    for col in ("n_eff", "multiplier"):
        m.loc[m["reason"] != "", col] = np.nan
    m["extrapolation"] = factor(m["n_eff"], *n_range)  # NaN where there is no N_eff
    m["extrapolated"] = outside(m["extrapolation"])
    return m.sort_values(["params", "name", "run_id"]).reset_index(drop=True)


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


def _fit_lev_alone(res: FamilyResult, lev: pd.DataFrame, ok: pd.DataFrame, fit: PowerLaw,
                   cfg: FitConfig, rng) -> None:
    """The exponent on the Leviathan runs above b alone (b as Dense's), or a note why not."""
    if lev.empty:
        res.notes.append("no finished Leviathan runs in this family: Dense fit only")
    elif ok["params"].nunique() >= 2:
        res.lev = fit_power_law(ok["params"], ok["loss"], b=fit.b, delta=cfg.delta)
        s = bootstrap_dense(ok, res.lev, FitConfig(**{**cfg.__dict__, "b": fit.b}), rng)
        res.intervals["alpha_lev"] = interval_bounds(s[:, 1], cfg.level)
        res.intervals["A_lev"] = interval_bounds(s[:, 0], cfg.level)
    else:
        res.notes.append(f"alpha on Leviathan runs alone needs two Leviathan sizes above b; "
                         f"found {ok['params'].nunique()}")


def _fit_shared(res, dense, lev, b, cfg, rng):
    sh = fit_shared_exponent(dense["params"], dense["loss"], lev["params"], lev["loss"], b=b,
                             delta=cfg.delta)
    res.shared = sh
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
        res.intervals["shared_multiplier"] = interval_bounds(
            np.exp((theta[:, 0] - theta[:, 1]) / theta[:, 2]), cfg.level)
    res.intervals["shared_alpha"] = interval_bounds(theta[:, 2], cfg.level)
    res.intervals["shared_multiplier_t"] = list(shared_lack_of_fit(
        dense["params"], dense["loss"], lev["params"], lev["loss"], sh, cfg.level))


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
