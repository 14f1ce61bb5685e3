"""Everything `make fit-scaling` computes for one sweep, family by family.

Before any fit: each arm keeps its best learning rate (analysis/lr_selection.py) and a family
with WSD cooldown branches keeps only its cooled-down runs (analysis/trajectory.py). Then per
family (tag `family`): the paper's view (Dense L(N), every Leviathan run's N_eff, alpha on
Leviathan alone, the shared exponent, b sensitivity: analysis/paper_view.py); the three
matchings of every non-Dense arm (analysis/matchings.py) and LEV over its control
(analysis/controls.py); L(D) and the joint L(N, D) where budgets vary (analysis/data_fits.py);
the multiplier against tokens seen, the token multiplier (analysis/tokens.py) and the
per-bucket perplexity ratios (analysis/buckets.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.b_check import check_b
from analysis.buckets import bucket_ratios
from analysis.controls import lev_vs_control, pooled_vs_control
from analysis.data_fits import fit_joint_law, fit_ld
from analysis.family import B_GRID, FamilyResult, FitConfig  # noqa: F401 - the public names
from analysis.lr_selection import select_lr
from analysis.matchings import match_all
from analysis.paper_view import fit_ln
from analysis.runs import AnalysisError, Runs, budget_ids, check_budgets
from analysis.tokens import token_multipliers
from analysis.trajectory import curve_points, exclude_uncooled, multiplier_vs_tokens


def _exclude(table: pd.DataFrame, mask, reason: str) -> None:
    table.loc[mask & (table["reason"] == ""), "reason"] = reason


def _top_budget(runs: pd.DataFrame, top: pd.Series, tol: float) -> pd.Series:
    """True for runs at (or above) their size's largest Dense budget: the L(N) ladder."""
    short = runs["tokens"] < runs["size"].map(top).astype(float) * (1 - tol)
    return ~short.fillna(False).astype(bool)


def _dense_ladder(dense: pd.DataFrame, tol: float) -> pd.DataFrame:
    """The L(N) ladder: each Dense size's runs at its largest token budget (an N x D grid's
    other budgets are left to the joint fit)."""
    ladder = []
    for _, g in dense.groupby("size"):
        ids = budget_ids(g["tokens"].to_numpy(), tol)
        ladder.append(g[ids == ids.max()])
    return pd.concat(ladder) if ladder else dense


def _add_off_ladder(res: FamilyResult, lev: pd.DataFrame, lev_ln: pd.DataFrame) -> None:
    """Leviathan runs below their size's L(N) budget join the multipliers, with the reason."""
    off = lev[~lev["run_id"].isin(lev_ln["run_id"])]
    if len(off):
        extra = off[["run_id", "name", "size", "pair", "seed", "params", "tokens", "loss"]]
        extra = extra.assign(reason="token budget below this size's L(N) ladder: see the "
                                    "joint L(N, D) fit", extrapolated=False)
        res.multipliers = pd.concat([res.multipliers, extra], ignore_index=True)


def _fit_trajectory(res: FamilyResult, fam: pd.DataFrame, ladder: pd.DataFrame,
                    lev: pd.DataFrame, lev_ln: pd.DataFrame, points: pd.DataFrame, mode: str,
                    cfg: FitConfig) -> None:
    """The multiplier against tokens seen, with a note when it is missing or mixes schedule
    position with scale."""
    valid = res.multipliers[res.multipliers["reason"] == ""]["run_id"]
    if mode == "cooled":  # every cooldown branch of a lineage: one curve of cooled points
        res.trajectory = multiplier_vs_tokens(points, fam[fam["arm"] == "dense"], lev,
                                              res.dense.b, cfg.delta, merge=True)
    else:
        res.trajectory = multiplier_vs_tokens(points, ladder,
                                              lev_ln[lev_ln["run_id"].isin(valid)],
                                              res.dense.b, cfg.delta)
    if res.trajectory is None:
        res.notes.append("multiplier vs tokens: no validation histories (val/loss with "
                         "val/tokens) for at least two Dense sizes and one Leviathan run")
    elif mode == "all":
        res.notes.append("multiplier vs tokens uses every validation point: no run marks "
                         "cooled-down points (WSD cooldown branches), so mid-schedule "
                         "checkpoints mix schedule position with scale")


def analyse_family(family: str, usable: pd.DataFrame, table: pd.DataFrame, runs: Runs,
                   cfg: FitConfig, rng) -> FamilyResult:
    res = FamilyResult(family)
    fam = usable[usable["family"] == family]
    res.b_check = check_b(_dense_ladder(fam[fam["arm"] == "dense"], cfg.budget_tol), cfg,
                          np.random.default_rng([cfg.seed, 24]), family)  # its own stream
    dense, lev = fam[fam["arm"] == "dense"].copy(), fam[fam["arm"] == "leviathan"].copy()
    if cfg.b is not None:
        low = (table["family"] == family) & (table["arm"] == "dense") & ~(table["loss"] > cfg.b)
        _exclude(table, low, f"Dense loss <= b = {cfg.b:g}: below the asymptote")
        dense = dense[dense["loss"] > cfg.b]

    # an N x D grid: L(N) takes each size's largest budget, the joint fit takes everything
    ladder = _dense_ladder(dense, cfg.budget_tol)
    grid = len(ladder) < len(dense)
    top = ladder.groupby("size")["tokens"].max()
    if grid:
        res.notes.append("token budgets vary within a size: L(N) uses each size's largest "
                         "budget; see the joint L(N, D) fit for the rest")
    lev_ln = lev[_top_budget(lev, top, cfg.budget_tol)] if grid else lev
    others = fam[fam["arm"] != "dense"]
    others = others[_top_budget(others, top, cfg.budget_tol)] if grid else others
    points, mode = curve_points(runs.history)
    if ladder["params"].nunique() >= 2:
        fit_ln(res, ladder, lev_ln, cfg, rng)
        _add_off_ladder(res, lev, lev_ln)
        _fit_trajectory(res, fam, ladder, lev, lev_ln, points, mode, cfg)
    else:
        res.notes.append(f"L(N) needs two Dense sizes; family {family!r} has "
                         f"{ladder['params'].nunique()}")
    if ladder["size"].nunique() >= 2 and len(others):
        res.matching = match_all(ladder, others, cfg, rng)
        res.controls = lev_vs_control(res.matching, cfg.level)
        res.pooled = pooled_vs_control(res.matching, res.controls, cfg.level)
    arms_tokens = fam[fam["arm"] != "dense"] if mode == "cooled" else others
    res.token_multipliers = token_multipliers(points, mode, ladder, arms_tokens, cfg, rng)
    res.bucket_ratios = bucket_ratios(runs.buckets, pd.concat([ladder, others]), cfg.level)
    if grid:
        fit_joint_law(res, dense, cfg)
    fit_ld(res, fam, cfg, rng)  # after the joint law: the data multipliers read it
    return res


def analyse(runs: Runs, cfg: FitConfig) -> tuple[dict[str, FamilyResult], pd.DataFrame]:
    """Fit every family; returns (family -> result, the run table with exclusion reasons)."""
    table = runs.table.copy()
    choices = select_lr(table, cfg.budget_tol, cfg.lr_estimator)
    finished = table[table["status"] == "FINISHED"]
    tried = finished.groupby(["family", "arm", "size"])["lr"].nunique()
    table["lr_swept"] = [tried.get((f, a, s), 0) >= 2 for f, a, s in
                         zip(table["family"], table["arm"], table["size"], strict=True)]
    cooled = exclude_uncooled(table)
    usable = table[table["reason"] == ""]
    if usable.empty:
        raise AnalysisError(f"{runs.source}: no finished runs to fit ({runs.counts()})")
    check_budgets(usable, cfg.budget_tol, runs.source)
    rng = np.random.default_rng(cfg.seed)
    results = {}
    for family in sorted(usable["family"].unique()):
        d = usable[(usable["family"] == family) & (usable["arm"] == "dense")]
        one_size_budgets = d["params"].nunique() == 1 and budget_ids(
            d["tokens"].to_numpy(), cfg.budget_tol).max() >= 1
        if d["params"].nunique() >= 2 or one_size_budgets:
            res = analyse_family(family, usable, table, runs, cfg, rng)
            res.lr_choices = choices[choices["family"] == family]
            if family in cooled:
                res.notes.append("WSD cooldown branches: only cooled-down runs are fitted "
                                 "(the main runs' mid-schedule final losses are excluded)")
            results[family] = res
    if not results:
        sizes = {f: int(usable[(usable["family"] == f) & (usable["arm"] == "dense")]["params"]
                        .nunique()) for f in sorted(usable["family"].unique())}
        raise AnalysisError(
            f"{runs.source}: need at least two Dense sizes in a family to fit L(N) (or one size "
            f"with several token budgets for L(D)); Dense sizes per family: {sizes}; "
            f"runs found: {runs.counts()}")
    return results, table
