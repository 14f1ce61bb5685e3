"""Everything `make fit-scaling` computes for one sweep, family by family.

Per family (tag `family`): L(N) on the Dense ladder, N_eff and the multiplier for every Leviathan
run, bootstrap intervals, alpha on the Leviathan runs alone, the shared-exponent estimate, the
sensitivity of the multipliers to b, L(D) where one size has several token budgets, the joint
L(N, D) where both vary, and the multiplier against tokens seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval, refit_batch, resample_counts
from analysis.joint import JointFit, bootstrap_joint, fit_joint
from analysis.powerlaw import (
    ALPHA_BOUNDS,
    B_DEFAULT,
    HUBER_DELTA,
    FitError,
    PowerLaw,
    SharedExponent,
    effective_size,
    fit_power_law,
    fit_shared_exponent,
)
from analysis.runs import AnalysisError, Runs
from analysis.trajectory import multiplier_vs_tokens

B_GRID = (1.5, 1.6, 1.69, 1.8, 1.82, 1.9, 2.0)  # b sensitivity; 1.82 is Epoch AI's refit of E
EXTRAPOLATION = 100.0  # an N_eff further than this factor outside the Dense sizes is not reported


@dataclass
class FitConfig:
    b: float | None = B_DEFAULT  # irreducible loss; None fits it
    params: str = "total"  # N = total | body parameters
    bootstrap: int = 1000  # bootstrap resamples for every interval
    seed: int = 0  # RNG seed of the bootstrap
    level: float = 0.95  # interval coverage
    delta: float = HUBER_DELTA  # Huber delta on log residuals
    b_grid: tuple[float, ...] = B_GRID  # asymptotes for the sensitivity table
    budget_tol: float = 0.05  # token counts within this relative gap are one budget


@dataclass
class FamilyResult:
    family: str
    dense: PowerLaw | None = None  # L(N) on the Dense ladder
    dense_samples: np.ndarray | None = None  # (R, 3) bootstrap A, alpha, b
    intervals: dict = field(default_factory=dict)  # name -> (lo, hi)
    lev: PowerLaw | None = None  # L(N) on the Leviathan runs alone
    shared: SharedExponent | None = None
    multipliers: pd.DataFrame | None = None  # one row per Leviathan run
    b_sensitivity: pd.DataFrame | None = None  # run x b -> multiplier
    data_fits: list = field(default_factory=list)  # L(D) per (arm, size)
    data_multipliers: pd.DataFrame | None = None  # D_eff / D for Leviathan (data scaling)
    joint: JointFit | None = None
    trajectory: pd.DataFrame | None = None  # multiplier vs tokens seen
    notes: list = field(default_factory=list)


def budget_ids(tokens: np.ndarray, tol: float) -> np.ndarray:
    """Cluster token counts: a new budget starts where the relative gap exceeds `tol`."""
    tokens = np.asarray(tokens, float)
    ids = np.zeros(tokens.size, int)
    finite = np.isfinite(tokens)
    if not finite.any():
        return ids
    order = np.argsort(np.where(finite, tokens, np.inf))
    cur, prev = 0, None
    for i in order:
        if not finite[i]:
            ids[i] = 0
            continue
        if prev is not None and tokens[i] > prev * (1 + tol):
            cur += 1
        ids[i], prev = cur, tokens[i]
    return ids


def _exclude(table: pd.DataFrame, mask, reason: str) -> None:
    table.loc[mask & (table["reason"] == ""), "reason"] = reason


def _interval(samples, level):
    lo, hi = percentile_interval(samples, level)
    return [float(lo), float(hi)]


def _degenerate(fit) -> bool:
    """True when the exponent sits at a bound: the losses do not follow a power law in N."""
    return not ALPHA_BOUNDS[0] * 10 < fit.alpha < ALPHA_BOUNDS[1] * 0.99


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


def _bootstrap_dense(dense: pd.DataFrame, fit: PowerLaw, cfg: FitConfig, rng, x: str = "params",
                     groups=None) -> np.ndarray:
    """(R, 3) samples of (A, alpha, b) refitted on resampled runs (x: params or tokens)."""
    n, loss = dense[x].to_numpy(float), dense["loss"].to_numpy(float)
    groups = dense["size"].to_numpy() if groups is None else groups
    counts = resample_counts(groups, cfg.bootstrap, rng)
    if cfg.b is None:  # b fitted too: one scalar fit per replicate
        out = []
        for c in counts:
            idx = np.repeat(np.arange(n.size), c)
            try:
                f = fit_power_law(n[idx], loss[idx], b=None, delta=cfg.delta, near=fit)
                out.append((f.A, f.alpha, f.b))
            except FitError:
                out.append((np.nan, np.nan, np.nan))
        return np.array(out)
    lx = np.log(n)
    x0 = float(lx.mean())
    theta = refit_batch(lx - x0, np.log(loss), np.zeros(n.size, int), counts, math.log(fit.b),
                        [math.log(fit.A) - fit.alpha * x0, fit.alpha], delta=cfg.delta)
    return np.column_stack([np.exp(theta[:, 0] + theta[:, 1] * x0), theta[:, 1],
                            np.full(len(theta), fit.b)])


def _fit_ln(res: FamilyResult, dense: pd.DataFrame, lev: pd.DataFrame, cfg: FitConfig, rng):
    fit = fit_power_law(dense["params"], dense["loss"], b=cfg.b, delta=cfg.delta)
    res.dense = fit
    samples = _bootstrap_dense(dense, fit, cfg, rng)
    res.dense_samples = samples
    res.intervals["A"] = _interval(samples[:, 0], cfg.level)
    res.intervals["alpha"] = _interval(samples[:, 1], cfg.level)
    if cfg.b is None:
        res.intervals["b"] = _interval(samples[:, 2], cfg.level)

    # multipliers: every finished Leviathan run, N_eff undefined where L <= b
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
    reasons = []
    degenerate = _degenerate(fit)
    if degenerate:
        res.notes.append(f"Dense L(N) fit is degenerate (alpha = {fit.alpha:.3g} at its bound): "
                         "the Dense losses do not fall with N as a power law, so no N_eff")
    n_lo, n_hi = float(dense["params"].min()), float(dense["params"].max())
    for row in m.itertuples():
        if not row.loss > fit.b:
            reasons.append(f"loss {row.loss:.4f} <= b = {fit.b:.3g}: N_eff undefined")
        elif degenerate:
            reasons.append(f"Dense L(N) fit degenerate (alpha = {fit.alpha:.3g})")
        elif not np.isfinite(row.n_eff) or row.n_eff <= 0:
            reasons.append(f"N_eff overflows (alpha = {fit.alpha:.3g}): the Dense fit does not "
                           "reach this loss")
        elif not n_lo / EXTRAPOLATION <= row.n_eff <= n_hi * EXTRAPOLATION:
            reasons.append(f"N_eff = {row.n_eff:.3g} is over {EXTRAPOLATION:g}x outside the "
                           f"Dense sizes fitted ({n_lo:.3g}..{n_hi:.3g}): not extrapolated")
        else:
            reasons.append("")
    m["reason"] = reasons
    for col in ("n_eff", "multiplier"):
        m.loc[m["reason"] != "", col] = np.nan
    res.multipliers = m.sort_values(["params", "name", "run_id"]).reset_index(drop=True)

    ok = lev[lev["loss"] > fit.b]
    if lev.empty:
        res.notes.append("no finished Leviathan runs in this family: Dense fit only")
    elif ok["params"].nunique() >= 2:  # exponent on the Leviathan runs alone
        res.lev = fit_power_law(ok["params"], ok["loss"], b=fit.b, delta=cfg.delta)
        s = _bootstrap_dense(ok, res.lev, FitConfig(**{**cfg.__dict__, "b": fit.b}), rng)
        res.intervals["alpha_lev"] = _interval(s[:, 1], cfg.level)
        res.intervals["A_lev"] = _interval(s[:, 0], cfg.level)
    else:
        res.notes.append(f"alpha on Leviathan runs alone needs two Leviathan sizes above b; "
                         f"found {ok['params'].nunique()}")
    if len(ok) and not degenerate:
        _fit_shared(res, dense, ok, fit.b, cfg, rng)
        if _degenerate(res.shared):
            res.notes.append(f"shared-exponent fit degenerate (alpha = {res.shared.alpha:.3g}); "
                             "not reported")
            res.shared = None
    res.b_sensitivity = _b_sensitivity(dense, lev, cfg)


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
        res.intervals["shared_multiplier"] = _interval(
            np.exp((theta[:, 0] - theta[:, 1]) / theta[:, 2]), cfg.level)
    res.intervals["shared_alpha"] = _interval(theta[:, 2], cfg.level)


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
            col = np.where(_degenerate(f) | ~((n_eff >= lo) & (n_eff <= hi)), np.nan, col)
        rows[f"{b:g}"] = col
    out = pd.DataFrame(rows)
    out.insert(0, "size", lev["size"].to_numpy())
    out.insert(0, "run_id", lev["run_id"].to_numpy())
    return out


def _fit_ld(res: FamilyResult, usable: pd.DataFrame, cfg: FitConfig, rng):
    """L(D) per (arm, size) with several budgets; D_eff / D for Leviathan at the same size."""
    b = cfg.b if cfg.b is not None else B_DEFAULT
    dm = []
    if cfg.b is not None:
        usable = usable[usable["loss"] > cfg.b]
    for (arm, size), g in usable.groupby(["arm", "size"]):
        if budget_ids(g["tokens"].to_numpy(), cfg.budget_tol).max() < 1:
            continue
        try:
            f = fit_power_law(g["tokens"], g["loss"], b=cfg.b, delta=cfg.delta)
        except FitError as err:
            res.notes.append(f"L(D) {arm} {size}: {err}")
            continue
        s = _bootstrap_dense(g, f, cfg, rng, x="tokens",
                             groups=budget_ids(g["tokens"].to_numpy(), cfg.budget_tol))
        res.data_fits.append({"arm": arm, "size": size, "B": f.A, "beta": f.alpha, "b": f.b,
                              "n_points": f.n_points, "B_ci": _interval(s[:, 0], cfg.level),
                              "beta_ci": _interval(s[:, 1], cfg.level)})
        if arm == "dense":
            lev = usable[(usable["arm"] == "leviathan") & (usable["size"] == size)]
            d_eff = f.inverse(lev["loss"])
            dm.append(pd.DataFrame({"run_id": lev["run_id"], "size": size,
                                    "tokens": lev["tokens"], "loss": lev["loss"],
                                    "d_eff": d_eff, "data_multiplier": d_eff / lev["tokens"]}))
    if cfg.b is None and res.data_fits:
        res.notes.append(f"L(D) fits use a fitted b per curve (b free); default would be {b}")
    if dm:
        res.data_multipliers = pd.concat(dm, ignore_index=True)


def analyse_family(family: str, usable: pd.DataFrame, table: pd.DataFrame, runs: Runs,
                   cfg: FitConfig, rng) -> FamilyResult:
    res = FamilyResult(family)
    fam = usable[usable["family"] == family]
    dense, lev = fam[fam["arm"] == "dense"].copy(), fam[fam["arm"] == "leviathan"].copy()
    if cfg.b is not None:
        low = (table["family"] == family) & (table["arm"] == "dense") & ~(table["loss"] > cfg.b)
        _exclude(table, low, f"Dense loss <= b = {cfg.b:g}: below the asymptote")
        dense = dense[dense["loss"] > cfg.b]

    # an N x D grid: L(N) takes each size's largest budget, the joint fit takes everything
    ladder = []
    for _, g in dense.groupby("size"):
        ids = budget_ids(g["tokens"].to_numpy(), cfg.budget_tol)
        ladder.append(g[ids == ids.max()])
    ladder = pd.concat(ladder) if ladder else dense
    grid = len(ladder) < len(dense)
    if grid:
        res.notes.append("token budgets vary within a size: L(N) uses each size's largest "
                         "budget; see the joint L(N, D) fit for the rest")
        top = ladder.groupby("size")["tokens"].max()
        short = lev["tokens"] < lev["size"].map(top).astype(float) * (1 - cfg.budget_tol)
        lev_ln = lev[~short.fillna(False)]
    else:
        lev_ln = lev
    if ladder["params"].nunique() >= 2:
        _fit_ln(res, ladder, lev_ln, cfg, rng)
        off = lev[~lev["run_id"].isin(lev_ln["run_id"])]
        if len(off):
            extra = off[["run_id", "name", "size", "pair", "seed", "params", "tokens", "loss"]]
            extra = extra.assign(reason="token budget below this size's L(N) ladder: see the "
                                        "joint L(N, D) fit")
            res.multipliers = pd.concat([res.multipliers, extra], ignore_index=True)
        valid = res.multipliers[res.multipliers["reason"] == ""]["run_id"]
        res.trajectory = multiplier_vs_tokens(runs.history, ladder,
                                              lev_ln[lev_ln["run_id"].isin(valid)], res.dense.b,
                                              cfg.delta)
        if res.trajectory is None:
            res.notes.append("multiplier vs tokens: no validation histories (val/loss with "
                             "val/tokens) for at least two Dense sizes and one Leviathan run")
    else:
        res.notes.append(f"L(N) needs two Dense sizes; family {family!r} has "
                         f"{ladder['params'].nunique()}")
    _fit_ld(res, fam, cfg, rng)
    if grid and dense["params"].nunique() >= 2 and len(dense) >= 6:
        try:
            res.joint = fit_joint(dense["params"], dense["tokens"], dense["loss"],
                                  delta=cfg.delta)
            boot = bootstrap_joint(dense["params"], dense["tokens"], dense["loss"], res.joint,
                                   n_rep=min(cfg.bootstrap, 400), seed=cfg.seed,
                                   delta=cfg.delta)
            res.intervals.update({f"joint_{k}": [v["lo"], v["hi"]] for k, v in boot.items()})
        except ValueError as err:
            res.notes.append(f"joint L(N, D): {err}")
    if res.joint is not None and res.multipliers is not None and len(res.multipliers):
        m = res.multipliers  # second estimate: N_eff from the joint law at the run's own D
        m["n_eff_joint"] = res.joint.effective_params(m["loss"], m["tokens"])
        m["multiplier_joint"] = m["n_eff_joint"] / m["params"]
    return res


def analyse(runs: Runs, cfg: FitConfig) -> tuple[dict[str, FamilyResult], pd.DataFrame]:
    """Fit every family; returns (family -> result, the run table with exclusion reasons)."""
    table = runs.table.copy()
    usable = table[table["reason"] == ""]
    if usable.empty:
        raise AnalysisError(f"{runs.source}: no finished runs to fit ({runs.counts()})")
    rng = np.random.default_rng(cfg.seed)
    results = {}
    for family in sorted(usable["family"].unique()):
        d = usable[(usable["family"] == family) & (usable["arm"] == "dense")]
        one_size_budgets = d["params"].nunique() == 1 and budget_ids(
            d["tokens"].to_numpy(), cfg.budget_tol).max() >= 1
        if d["params"].nunique() >= 2 or one_size_budgets:
            results[family] = analyse_family(family, usable, table, runs, cfg, rng)
    if not results:
        sizes = {f: int(usable[(usable["family"] == f) & (usable["arm"] == "dense")]["params"]
                        .nunique()) for f in sorted(usable["family"].unique())}
        raise AnalysisError(
            f"{runs.source}: need at least two Dense sizes in a family to fit L(N) (or one size "
            f"with several token budgets for L(D)); Dense sizes per family: {sizes}; "
            f"runs found: {runs.counts()}")
    return results, table
