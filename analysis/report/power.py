"""Before launch, in markdown: the dry run's power analysis of a plan (one line per headline
number: truth, predicted half-width, simulated spread, coverage, the smallest effect it detects)
and the design search's best designs."""

from __future__ import annotations

import pandas as pd

from analysis.power.design import Candidate
from analysis.power.model import Cell, PowerModel, design_cost


def power_md(table: pd.DataFrame, cells: list[Cell], model: PowerModel) -> str:
    """The dry run's power section: one line per headline number."""
    src = table["interval"].iloc[0] if len(table) else "fit"
    how = ("run-to-run noise from the design's own seeds" if src == "seeds" else
           "one seed: the printed intervals need a noise level (fit.seed_noise / --noise-from); "
           "these widths assume it is given (without it the LEV/control interval is not shown)")
    trend = (f" x (N / N_smallest)^{model.effect_slope:g}" if model.effect_slope else "")
    slope = (f" x (N / N_smallest)^{model.noise_slope:g}" if model.noise_slope else "")
    drift = "".join(f", {arm}'s drifting {v:+g} octave over the ladder" for arm, v in
                    sorted(model.lr_drift.items()) if v)
    out = [f"Power analysis ({model.ladders} simulated ladders through the analysis, "
           f"{model.bootstrap} bootstrap replicates each; truth: LEV over its control "
           f"{model.effect:g}{trend}, noise {_noise_txt(model)}{slope}, LR curvature "
           f"{model.lr_curvature:g} per octave^2, true optimum ±{model.lr_spread:g} octave "
           f"around the rule's{drift}; {how}); GPU-hours ~{design_cost(cells):.4g}:",
           "", "| number | arm | size | truth | ±95% half-width (predicted) | simulated spread "
           "(x t) | coverage | detects |", "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        if r.quantity == "lev_over_control_trend":  # a slope of ln ratio on ln N: additive
            out.append(f"| trend of LEV over its control (slope on ln N) | {r.arm} | | "
                       f"{r.truth:+.3g} | ±{r.half_width:.3f} | ±{r.empirical:.3f} | "
                       f"{r.coverage:.0%} | a slope of ±{r.detectable:.3f} |")
            continue
        out.append(f"| {r.quantity} | {r.arm} | {r.size} | {r.truth:.3g} | ±{r.half_width:.1%} "
                   f"| ±{r.empirical:.1%} | {r.coverage:.0%} | {r.detectable:.3g}x |")
    bad = table[(table["check"] > 0.2) & (table["half_width"] < table["empirical"])]
    wide = table[(table["check"] > 0.2) & (table["half_width"] >= table["empirical"])]
    if len(bad):
        out.append(f"\nWidths: the printed intervals are narrower than the estimates' spread "
                   f"(x t on their noise's degrees of freedom) by more than 20% for "
                   f"{', '.join(bad['quantity'] + ' ' + bad['size'])}; whether they still hold "
                   "is their coverage, checked below.")
    if len(wide):
        out.append(f"\nWidths: the printed intervals are wider than the spread by more than 20% "
                   f"(conservative) for {len(wide)} numbers.")
    if not len(bad) and not len(wide):
        out.append("\nWidths: every predicted half-width is within 20% of the simulated spread.")
    failed = failed_checks(table)
    out += ["", *(f"FAILED check: {line}" for line in failed)] if failed else [
        "", f"Check: every number's simulated coverage is >= {MIN_COVERAGE:.0%} and its bias "
            "within half its half-width."]
    return "\n".join(out)


MIN_COVERAGE = 0.90  # a printed 95% interval that covers its truth less often than this fails


def failed_checks(table: pd.DataFrame) -> list[str]:
    """One line per number whose simulated coverage is below MIN_COVERAGE or whose bias exceeds
    half its predicted half-width: the design (or the stated truth) would mislead."""
    out = []
    for r in table.itertuples(index=False):
        trend = r.quantity == "lev_over_control_trend"
        name = f"{r.quantity} {r.arm} {r.size}".strip()
        fmt = (lambda v: f"{v:.3f}") if trend else (lambda v: f"{v:.1%}")
        if r.coverage < MIN_COVERAGE:
            out.append(f"{name}: its 95% intervals cover the truth {r.truth:.3g} in "
                       f"{r.coverage:.0%} of the simulated ladders (< {MIN_COVERAGE:.0%})")
        if abs(r.bias) > r.half_width / 2:
            out.append(f"{name}: bias {'+' if r.bias >= 0 else '-'}{fmt(abs(r.bias))} exceeds "
                       f"half its half-width (±{fmt(r.half_width)})")
    return out


def _noise_txt(model: PowerModel) -> str:
    return ", ".join(f"{a} {v:.2%}" for a, v in sorted(model.noise.items()))


def design_md(found: list[Candidate], budget: float, target: str, reference=None) -> str:
    """The best designs, one line each, with cost and predicted widths."""
    out = [f"Best designs within {budget:.4g} GPU-hours (target: {target}; ± is the larger of "
           "the predicted 95% half-width and the simulated spread):", "",
           "| # | GPU-h | target ± | seeds (lev/ctl) | Dense seeds | LR sweep at | Dense rungs "
           "| sizes |", "|---|---|---|---|---|---|---|---|"]
    for i, c in enumerate(found, 1):
        k = c.knobs
        seeds = (f"{k['seeds']} to {min(k['seeds_by_size'].values())}" if k["seeds_by_size"]
                 else f"{k['seeds']}")
        width = f"{c.width:.3f}" if target == "slope" else f"{c.width:.1%}"
        out.append(f"| {i} | {c.cost:.4g} | ±{width} | {seeds} | {k['dense_seeds']} "
                   f"| {', '.join(k['lr_sizes']) or 'none'} | {'yes' if k['dense_rungs'] else 'no'}"
                   f" | {len(k['sizes'])} |")
    if reference is not None:
        out.append(f"\nThe grid as it stands: {reference[1]:.4g} GPU-hours, ±{reference[0]:.1%}.")
    return "\n".join(out)
