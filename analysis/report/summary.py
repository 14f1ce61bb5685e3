"""summary.md: the headline first (three matchings, LEV over its control), what was switched
on or off by the input, then the supporting tables (LR choices, token multiplier, rare tokens,
the paper's per-run table, data scaling, excluded runs)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.config import FitConfig
from analysis.inputs.runs import Runs, human
from analysis.readings.noise import FIT_ONLY, LABELS
from analysis.readings.trajectory import marks_cooled
from analysis.report.format import ci, dagger, num
from analysis.report.headline import headline_md
from analysis.report.tables import (
    b_check_md,
    bucket_table_md,
    data_md,
    lr_miss_md,
    lr_table_md,
    robustness_md,
    tokens_md,
)
from analysis.scaling import Analysis, FamilyResult


def fit_line(cfg: FitConfig) -> str:
    b_txt = "fitted" if cfg.b is None else f"fixed at {cfg.b:g}"
    return (f"Fit: L(X) = A·X^-α + b with b {b_txt}, minimising the Huber loss (δ = {cfg.delta:g})"
            " of the log residuals log L − log(A·X^-α + b): least squares for residuals below "
            f"{cfg.delta:.0%} of the loss, absolute deviations beyond (a run that is off by "
            "more counts less); on 4–8 Dense points it is not worse than least squares "
            "(tests/unit/test_analysis_noise.py). The joint L(N, D) keeps Epoch AI's δ = 1e-3.")


def inputs_md(runs: Runs, analysis: Analysis) -> list[str]:
    """What the input switched on or off, in one list."""
    table, results = analysis.table, analysis.families
    u = table[table["reason"] == ""]
    dense = u[u["arm"] == "dense"]
    out = ["Inputs:"]
    for col, what, why in (
            ("params_body", "body matching", "body_params column (MLflow n_params/body)"),
            ("flops", "compute matching", "flops column (MLflow plan.flops_per_token)")):
        if np.isfinite(dense[col]).sum() == 0:
            out.append(f"- {what}: off (no {why} for the Dense runs)")
    lr = table[np.isfinite(table["lr"])]
    if lr.empty:
        out.append("- LR selection: off (no lr column / trainer.lr): one LR per run as given")
    else:
        n = sum(len(r.lr_choices) for r in results.values() if r.lr_choices is not None)
        out.append(f"- LR selection: {n} sweep points with two or more LRs; the best kept")
    sources = {r.matching.noise.source for r in results.values() if r.matching is not None}
    seeds = max([int(r.matching.rows["n_seeds"].max()) for r in results.values()
                 if r.matching is not None and len(r.matching.rows)] or [1])
    if "fit" in sources or not sources:
        out.append("- seeds: one per arm and size, no noise level given: **intervals are "
                   f"{FIT_ONLY}** (add grid.seeds, or fit.seed_noise.<arm> / --noise-from "
                   "<pilot sweep>)")
    elif "given" in sources:
        out.append("- seeds: one per arm and size: intervals include run-to-run noise at a level "
                   "measured elsewhere (fit.seed_noise / --noise-from)")
    else:
        out.append(f"- seeds: up to {seeds} per arm and size: intervals include run-to-run "
                   "noise, estimated per arm from the sweep's seeds")
    if runs.history is None or runs.history.empty:
        out.append("- validation curves: none (--curves, or val/loss with val/tokens): no "
                   "token multiplier and no multiplier against tokens")
    elif marks_cooled(runs.history):
        out.append("- validation curves: cooled-down points only (WSD cooldown branches)")
    else:
        out.append("- validation curves: no cooled-down marks: every point is used "
                   "(mid-schedule checkpoints)")
    if runs.buckets is None or runs.buckets.empty:
        out.append("- token-frequency buckets: none (val/loss_freq/*): no rare-token table")
    return out + [""]


def _paper_table_md(r: FamilyResult, cfg: FitConfig) -> list[str]:
    """The paper's per-run table: the Dense law, each Leviathan run's multiplier, Leviathan's
    own exponent and the shared-exponent multiplier where fitted, the sensitivity to b."""
    pct = f"{cfg.level:.0%}"
    iv = r.intervals
    f = r.dense
    out = [f"### The paper's table: each Leviathan run (N = {cfg.params} parameters)", ""]
    out += [f"Dense L(N) = A·N^-α + b: A = {num(f.A, 4)}{ci(*iv.get('A', (None, None)))}, "
            f"α = {f.alpha:.4f}{ci(*iv.get('alpha', (None, None)))}, b = {f.b:.4g}"
            f"{ci(*iv.get('b', (None, None)))} ({f.n_points} runs).", ""]
    out += [f"| Size | N | Dense loss | Leviathan loss | N_eff | Multiplier ({pct} CI) |",
            "|---|---|---|---|---|---|"]
    out += [_paper_row_md(m) for m in r.multipliers.itertuples()]
    if r.multipliers["extrapolated"].any():
        out += ["", "† extrapolated: N_eff lies outside the fitted Dense sizes, by the factor "
                    "shown; add Dense rungs (grid.dense_sizes) to read it by interpolation."]
    out += ["", _paper_interval_md(r.multipliers), ""]
    if r.lev is not None:
        out.append(f"Leviathan alone: α = {r.lev.alpha:.4f}"
                   f"{ci(*iv.get('alpha_lev', (None, None)))} (Dense {f.alpha:.4f}; "
                   "the paper: 0.47 vs 0.38).")
    if r.shared is not None:
        s = r.shared
        out.append(f"Shared exponent (A_dense, A_lev, one α, b = {s.b:g}): "
                   f"multiplier (A_dense/A_lev)^(1/α) = {s.multiplier:.3f}x"
                   f"{ci(*iv.get('shared_multiplier', (None, None)))} (bootstrap), "
                   f"{ci(*iv.get('shared_multiplier_t', (None, None)))[1:]} "
                   f"(lack of fit, Student-t), α = "
                   f"{s.alpha:.4f}{ci(*iv.get('shared_alpha', (None, None)))}.")
    out.append("")
    return out + _b_sensitivity_md(r.b_sensitivity)


def _paper_interval_md(m: pd.DataFrame) -> str:
    """How the per-run table's intervals were drawn (issue 37.5)."""
    source = m["interval"].dropna().iloc[0] if "interval" in m and m["interval"].notna().any() \
        else "fit"
    if source == "fit":
        return (f"Intervals: **{FIT_ONLY}**: one seed per arm and size and no noise level given "
                "(the Dense sizes resampled, each run's loss as measured).")
    levels = m.dropna(subset=["seed_noise"]).groupby("size", sort=False)[
        ["seed_noise", "lr_miss"]].first()
    per_size = ", ".join(f"{s} {v.seed_noise:.2%}" + (f" (LR miss {v.lr_miss:.2%})"
                                                       if v.lr_miss > 0 else "")
                         for s, v in levels.iterrows())
    return (f"Intervals: {LABELS[source]}, as the headline: the Dense law refitted on every "
            "replicate of its runs and each run's own loss redrawn with one run's noise at its "
            f"size's level{' (relative sd: ' + per_size + ')' if per_size else ''}.")


def _paper_row_md(m) -> str:
    """One Leviathan run's row of the paper's table (its multiplier, or why it has none)."""
    if m.reason:
        mult = f"excluded: {m.reason}"
    else:
        mult = (f"{m.multiplier:.2f}x{ci(m.multiplier_lo, m.multiplier_hi)}"
                + dagger(m.extrapolation, m.n_eff, m.dense_params))
    dl = getattr(m, "dense_loss", np.nan)
    return (f"| {m.size} | {human(m.params)} | {num(dl, 4)} | {m.loss:.4f} | "
            f"{human(m.n_eff) if np.isfinite(m.n_eff) else '–'} | {mult} |")


def _b_sensitivity_md(b_sensitivity: pd.DataFrame | None) -> list[str]:
    """The multipliers with Dense refitted at each fixed b, one column per b (if computed)."""
    if b_sensitivity is None or not len(b_sensitivity):
        return []
    bs = [c for c in b_sensitivity.columns if c not in ("run_id", "size")]
    out = ["Sensitivity of the multipliers to b (Dense refitted at each b):", "",
           "| Size | " + " | ".join(f"b={b}" for b in bs) + " |",
           "|---|" + "---|" * len(bs)]
    for row in b_sensitivity.itertuples(index=False):
        vals = [num(v) for v in row[2:]]
        out.append(f"| {row.size} | " + " | ".join(vals) + " |")
    return out + [""]


def _joint_md(r: FamilyResult) -> list[str]:
    """The joint L(N, D) law and the multipliers it gives at each run's own D (if fitted)."""
    if r.joint is None:
        return []
    j = r.joint
    iv = r.intervals
    c = {k: ci(*iv.get(f"joint_{k}", (None, None))) for k in ("E", "A", "B", "alpha", "beta")}
    out = [f"Joint L(N, D) = E + A·N^-α + B·D^-β (Epoch AI's fitting procedure): "
           f"E = {j.E:.4f}{c['E']}, A = {j.A:.4g}{c['A']}, B = {j.B:.4g}{c['B']}, "
           f"α = {j.alpha:.4f}{c['alpha']}, β = {j.beta:.4f}{c['beta']} "
           f"({j.n_points} runs)."]
    if r.multipliers is not None and "multiplier_joint" in r.multipliers:
        m = r.multipliers
        source = m["interval_joint"].iloc[0] if "interval_joint" in m else "fit"
        how = (f"intervals: {FIT_ONLY}, none shown" if source == "fit" else
               f"intervals: {LABELS[source]}, the law refitted on every replicate")
        out.append("Multipliers from the joint law at each run's own D: " + ", ".join(
            f"{x.size} at {human(x.tokens)} tokens {num(x.multiplier_joint)}x"
            + ci(getattr(x, "multiplier_joint_lo", None), getattr(x, "multiplier_joint_hi", None))
            + dagger(x.extrapolation_joint, x.n_eff_joint, float("nan"))
            for x in m.itertuples()) + f" (†: outside the Dense points in N or D, by the factor "
            f"shown; {how}).")
    return out


def _trajectory_md(r: FamilyResult) -> list[str]:
    """Each run's multiplier at its last matched token count (if there are curves)."""
    if r.trajectory is None:
        return []
    last = r.trajectory.sort_values("tokens").groupby("run_id").tail(1)
    return ["Multiplier at the last matched token count: " + ", ".join(
        f"{row.size} {row.multiplier:.3g}x at {human(row.tokens)}"
        + dagger(row.extrapolation, row.n_eff, row.n_dense_max)
        for row in last.itertuples()) + " (multiplier_vs_tokens.png; †: N_eff outside the Dense "
        "sizes at that token count, by the factor shown)."]


def _family_md(fam: str, r: FamilyResult, cfg: FitConfig) -> list[str]:
    """One family's section: headline, robustness, then each table the fit produced."""
    out = [f"## Family `{fam}`", ""]
    out += headline_md(r, cfg) + b_check_md(r.b_check, cfg) + robustness_md(r, cfg)
    if r.lr_choices is not None:
        out += lr_table_md(r.lr_choices, fam)
    out += lr_miss_md(r.lr_miss, fam)
    out += tokens_md(r, cfg) + bucket_table_md(r.bucket_ratios, cfg.level)
    if r.dense is not None:
        out += _paper_table_md(r, cfg)
    out += data_md(r, cfg) + _joint_md(r) + _trajectory_md(r)
    return out + [f"- {n}" for n in r.notes] + [""]


def _excluded_md(analysis: Analysis) -> list[str]:
    """The runs no fit used, with the reason (the ledger, analysis/inputs/ledger.py)."""
    exc = analysis.excluded.shown(analysis.table)
    out = ["## Excluded runs", ""]
    if exc.empty:
        return out + ["None."]
    out += ["| Run | Arm | Size | Family | Reason |", "|---|---|---|---|---|"]
    return out + [f"| {e.name or e.run_id} | {e.arm} | {e.size} | {e.family} | {e.reason} |"
                  for e in exc.itertuples()]


def headline_note(runs: Runs, cfg: FitConfig, results: dict[str, FamilyResult]) -> str:
    """The headline table of each family: headline.md, and the sweep's parent run's
    description on MLflow (mlflow.note.content)."""
    out = [f"## Scaling fit: {runs.sweep or runs.source}", ""]
    for fam, r in results.items():
        table = headline_md(r, cfg)
        if table and len(results) > 1:
            out += [f"Family `{fam}`", ""]
        out += table
    if len(out) == 2:
        out.append("No headline: no non-Dense arm could be matched (summary.md says why).")
    return "\n".join(out) + "\n"


def summary_md(runs: Runs, cfg: FitConfig, analysis: Analysis) -> str:
    pct = f"{cfg.level:.0%}"
    out = [f"# Scaling fit: {runs.sweep or runs.source}", "",
           f"Source: {runs.source}. Intervals: {pct} bootstrap percentile, {cfg.bootstrap} "
           f"resamples (seed {cfg.seed}).", "", fit_line(cfg), ""]
    out += inputs_md(runs, analysis)
    for fam, r in analysis.families.items():
        out += _family_md(fam, r, cfg)
    out += _excluded_md(analysis)
    return "\n".join(out) + "\n"
