"""Everything `make fit-scaling` computes for one sweep, family by family, assembled from what each
reading returns.

Before any fit: each arm keeps its best learning rate (analysis/readings/lr_selection.py) and a
family with WSD cooldown branches keeps only its cooled-down runs
(analysis/readings/trajectory.py); the runs they leave out go into the ledger
(analysis/inputs/ledger.py). Then per family (tag `family`), `analyse_family` builds one
FamilyResult from: the b check (analysis/readings/b_check.py); the paper's view (Dense L(N), every
Leviathan run's N_eff, alpha on Leviathan alone, the shared exponent, b sensitivity:
analysis/readings/paper_view.py); the multiplier against tokens seen (trajectory); the three
matchings of every non-Dense arm (analysis/readings/matchings.py) and LEV over its control
(analysis/readings/controls.py); the token multiplier (analysis/readings/tokens.py); the
per-bucket perplexity ratios (analysis/readings/buckets.py); the joint L(N, D), L(D) per size and
the data multipliers (analysis/readings/data_multipliers.py). A reading that needs another's
result takes it as an argument; the shared bootstrap stream is drawn in this order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.config import FitConfig
from analysis.inputs.ledger import Ledger
from analysis.inputs.runs import AnalysisError, Runs, budget_ids, check_budgets
from analysis.laws.joint import JointFit
from analysis.laws.lr_miss import LrMiss, refuse_pooled
from analysis.laws.lr_miss import estimate as estimate_miss
from analysis.laws.powerlaw import PowerLaw, SharedExponent
from analysis.readings.b_check import check_b
from analysis.readings.buckets import bucket_ratios
from analysis.readings.controls import lev_vs_control, pooled_vs_control, trends
from analysis.readings.data_multipliers import JointReading, data_multipliers, joint_law, size_laws
from analysis.readings.lr_selection import select_lr
from analysis.readings.matchings import Matching, match_all
from analysis.readings.paper_view import paper_view, with_joint, with_off_ladder
from analysis.readings.tokens import token_multipliers
from analysis.readings.trajectory import curve_points, multiplier_vs_tokens, uncooled


@dataclass(frozen=True)
class FamilyResult:
    """What the fit finds for one family (the sweep's tag `family`)."""

    family: str
    dense: PowerLaw | None = None  # L(N) on the Dense ladder (N = FitConfig.params)
    dense_samples: np.ndarray | None = None  # (R, 3) bootstrap A, alpha, b
    intervals: dict | None = None  # name -> [lo, hi]
    lev: PowerLaw | None = None  # L(N) on the Leviathan runs alone
    shared: SharedExponent | None = None
    multipliers: pd.DataFrame | None = None  # one row per Leviathan run (the paper's table)
    b_sensitivity: pd.DataFrame | None = None  # run x b -> multiplier
    matching: Matching | None = None  # (arm, size) x basis
    controls: pd.DataFrame | None = None  # LEV over its control, per size and basis
    pooled: pd.DataFrame | None = None  # LEV over its control pooled across sizes, per basis
    trends: pd.DataFrame | None = None  # slope of ln(value) on ln N and the homogeneity test,
    #   per LEV-over-control and multiplier (analysis/readings/controls.py TREND_COLUMNS)
    lr_choices: pd.DataFrame | None = None  # the LR kept per sweep point
    lr_miss: LrMiss | None = None  # the LR model: each group's loss at its optimum
    #   (analysis/laws/lr_miss.py)
    token_multipliers: pd.DataFrame | None = None  # tokens Leviathan needs for Dense's loss
    bucket_ratios: pd.DataFrame | None = None  # per-bucket perplexity ratio against Dense
    data_fits: tuple = ()  # L(D) per (arm, size)
    data_multipliers: pd.DataFrame | None = None  # D_eff / D for Leviathan (data scaling)
    joint: JointFit | None = None
    trajectory: pd.DataFrame | None = None  # multiplier vs tokens seen
    b_check: dict | None = None  # Dense L(N) with b free beside the b used (b_check.py)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    """What `analyse` returns: each family's result, the runs as fitted (losses as the LR choice
    reads them; `lr_swept`; `reason` from the ledger) and the ledger of excluded runs."""

    families: dict[str, FamilyResult]
    table: pd.DataFrame
    excluded: Ledger


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


def _trajectory(points: pd.DataFrame, mode: str, fam: pd.DataFrame, ladder: pd.DataFrame,
                lev: pd.DataFrame, lev_ln: pd.DataFrame, multipliers: pd.DataFrame, b: float,
                cfg: FitConfig) -> tuple[pd.DataFrame | None, list[str]]:
    """The multiplier against tokens seen, with a note when it is missing or mixes schedule
    position with scale."""
    valid = multipliers[multipliers["reason"] == ""]["run_id"]
    if mode == "cooled":  # every cooldown branch of a lineage: one curve of cooled points
        traj = multiplier_vs_tokens(points, fam[fam["arm"] == "dense"], lev, b, cfg.delta,
                                    merge=True)
    else:
        traj = multiplier_vs_tokens(points, ladder, lev_ln[lev_ln["run_id"].isin(valid)], b,
                                    cfg.delta)
    if traj is None:
        return None, ["multiplier vs tokens: no validation histories (val/loss with val/tokens) "
                      "for at least two Dense sizes and one Leviathan run"]
    if mode == "all":
        return traj, ["multiplier vs tokens uses every validation point: no run marks "
                      "cooled-down points (WSD cooldown branches), so mid-schedule checkpoints "
                      "mix schedule position with scale"]
    return traj, []


def analyse_family(family: str, usable: pd.DataFrame, runs: Runs, cfg: FitConfig, rng,
                   lr_choices: pd.DataFrame, cooled: bool, lr_miss: LrMiss | None = None
                   ) -> FamilyResult:
    """One family's result from the usable runs (and the sweep's curves and buckets)."""
    fam = usable[usable["family"] == family]
    dense, lev = fam[fam["arm"] == "dense"], fam[fam["arm"] == "leviathan"]
    if cfg.b is not None:  # below the asymptote: out of L(N) (analyse records them)
        dense = dense[dense["loss"] > cfg.b]

    # an N x D grid: L(N) takes each size's largest budget, the joint fit takes everything
    ladder = _dense_ladder(dense, cfg.budget_tol)
    grid = len(ladder) < len(dense)
    top = ladder.groupby("size")["tokens"].max()
    notes = ["token budgets vary within a size: L(N) uses each size's largest budget; see the "
             "joint L(N, D) fit for the rest"] if grid else []
    lev_ln = lev[_top_budget(lev, top, cfg.budget_tol)] if grid else lev
    others = fam[fam["arm"] != "dense"]
    others = others[_top_budget(others, top, cfg.budget_tol)] if grid else others
    # issue 37.5: the b check, the per-run table and the data multipliers draw the headline's
    # noise (the family's other runs, where an arm without seeds borrows its level; the LR model)
    b_check = check_b(_dense_ladder(fam[fam["arm"] == "dense"], cfg.budget_tol), cfg,
                      np.random.default_rng([cfg.seed, 24]), family,  # its own stream
                      lr_miss=lr_miss, context=others)
    points, mode = curve_points(runs.history)
    paper, trajectory, multipliers = None, None, None
    if ladder["params"].nunique() >= 2:
        paper = paper_view(ladder, lev_ln, cfg, rng, lr_miss=lr_miss, context=others)
        multipliers = with_off_ladder(paper.multipliers, lev, lev_ln)
        trajectory, traj_notes = _trajectory(points, mode, fam, ladder, lev, lev_ln,
                                             paper.multipliers, paper.dense.b, cfg)
        notes += list(paper.notes) + traj_notes
    else:
        notes.append(f"L(N) needs two Dense sizes; family {family!r} has "
                     f"{ladder['params'].nunique()}")
    matching = controls = pooled = slopes = None
    if ladder["size"].nunique() >= 2 and len(others):
        matching = match_all(ladder, others, cfg, rng, lr_miss)
        controls = lev_vs_control(matching, cfg.level)
        pooled = pooled_vs_control(matching, controls, cfg.level)
        slopes = trends(matching, controls, cfg.level)
    arms_tokens = fam[fam["arm"] != "dense"] if mode == "cooled" else others
    tokens = token_multipliers(points, mode, ladder, arms_tokens, cfg, rng)
    buckets = bucket_ratios(runs.buckets, pd.concat([ladder, others]), cfg.level, cfg=cfg,
                            lr_miss=lr_miss)  # issue 37.5: the headline's noise
    joint = joint_law(dense, cfg, fam[fam["arm"] != "dense"], lr_miss) if grid \
        else JointReading()  # issue 37.5: its intervals with the headline's noise
    if joint.joint is not None and not joint.notes and multipliers is not None:
        multipliers = with_joint(multipliers, joint, dense)
    fits, ld_notes = size_laws(fam, cfg, rng)
    notes += list(joint.notes) + list(ld_notes)
    if cooled:
        notes.append("WSD cooldown branches: only cooled-down runs are fitted (the main runs' "
                     "mid-schedule final losses are excluded)")
    return FamilyResult(
        family, dense=paper and paper.dense, dense_samples=paper and paper.dense_samples,
        intervals={**(paper.intervals if paper else {}), **joint.intervals},
        lev=paper and paper.lev, shared=paper and paper.shared, multipliers=multipliers,
        b_sensitivity=paper and paper.b_sensitivity, matching=matching, controls=controls,
        pooled=pooled, trends=slopes, lr_choices=lr_choices, token_multipliers=tokens,
        lr_miss=lr_miss.for_family(family) if lr_miss is not None else None,
        bucket_ratios=buckets,
        data_fits=fits, data_multipliers=data_multipliers(joint.joint, fam, cfg, rng, lr_miss),
        joint=joint.joint, trajectory=trajectory, b_check=b_check, notes=tuple(notes))


def _fitted(dense: pd.DataFrame, budget_tol: float) -> bool:
    """A family is fitted with two Dense sizes (L(N)), or one with several budgets (L(D))."""
    return dense["params"].nunique() >= 2 or (dense["params"].nunique() == 1 and budget_ids(
        dense["tokens"].to_numpy(), budget_tol).max() >= 1)


def analyse(runs: Runs, cfg: FitConfig) -> Analysis:
    """Fit every family: each one's result, the runs as fitted and the ledger of excluded
    runs."""
    excluded = runs.excluded
    tried_lrs = excluded.annotate(runs.table)
    refuse_pooled(tried_lrs, cfg)
    lr = select_lr(tried_lrs, cfg.budget_tol, cfg.lr_estimator)
    table = lr.fitted(runs.table)
    excluded = excluded.record("lr", lr.by_run(table))
    miss = estimate_miss(lr.fitted(tried_lrs), excluded.usable(table), cfg,
                         np.random.default_rng([cfg.seed, 37]), cfg.bootstrap)
    table = miss.corrected(table)  # each group's loss at its optimum
    finished = table[table["status"] == "FINISHED"]
    tried = finished.groupby(["family", "arm", "size"])["lr"].nunique()
    table = table.assign(lr_swept=[tried.get((f, a, s), 0) >= 2 for f, a, s in
                                   zip(table["family"], table["arm"], table["size"],
                                       strict=True)])
    cooled, main_runs = uncooled(excluded.annotate(table))
    excluded = excluded.record("cooldown", main_runs)
    usable = excluded.usable(table)
    if usable.empty:
        raise AnalysisError(f"{runs.source}: no finished runs to fit ({runs.counts()})")
    check_budgets(usable, cfg.budget_tol, runs.source)
    rng = np.random.default_rng(cfg.seed)
    results = {}
    for family in sorted(usable["family"].unique()):
        d = usable[(usable["family"] == family) & (usable["arm"] == "dense")]
        if not _fitted(d, cfg.budget_tol):
            continue
        choices = lr.choices[lr.choices["family"] == family]
        results[family] = res = analyse_family(family, usable, runs, cfg, rng, choices,
                                               family in cooled, miss)
        if cfg.b is not None:
            low = table[(table["family"] == family) & (table["arm"] == "dense")
                        & ~(table["loss"] > cfg.b)]
            excluded = excluded.record("asymptote", pd.Series(
                f"Dense loss <= b = {cfg.b:g}: below the asymptote", index=low["run_id"],
                dtype=object))
        if res.multipliers is not None:
            excluded = excluded.record("paper view", res.multipliers.set_index("run_id")["reason"])
    if not results:
        sizes = {f: int(usable[(usable["family"] == f) & (usable["arm"] == "dense")]["params"]
                        .nunique()) for f in sorted(usable["family"].unique())}
        raise AnalysisError(
            f"{runs.source}: need at least two Dense sizes in a family to fit L(N) (or one size "
            f"with several token budgets for L(D)); Dense sizes per family: {sizes}; "
            f"runs found: {runs.counts()}")
    return Analysis(results, excluded.annotate(table), excluded)
