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
    out = [f"Power analysis ({model.ladders} simulated ladders through the analysis, "
           f"{model.bootstrap} bootstrap replicates each; truth: LEV over its control "
           f"{model.effect:g}, noise {_noise_txt(model)}, LR curvature "
           f"{model.lr_curvature:g} per octave^2, true optimum ±{model.lr_spread:g} octave "
           f"around the rule's; {how}); GPU-hours ~{design_cost(cells):.4g}:",
           "", "| number | arm | size | truth | ±95% half-width (predicted) | simulated spread "
           "(x t) | coverage | detects |", "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        out.append(f"| {r.quantity} | {r.arm} | {r.size} | {r.truth:.3g} | ±{r.half_width:.1%} "
                   f"| ±{r.empirical:.1%} | {r.coverage:.0%} | {r.detectable:.3g}x |")
    bad = table[(table["check"] > 0.2) & (table["half_width"] < table["empirical"])]
    wide = table[(table["check"] > 0.2) & (table["half_width"] >= table["empirical"])]
    if len(bad):
        out.append(f"\nCheck failed: the printed intervals are narrower than the estimates' "
                   f"spread by more than 20% for {', '.join(bad['quantity'] + ' ' + bad['size'])}"
                   ": they would claim more than they hold.")
    if len(wide):
        out.append(f"\nCheck: the printed intervals are wider than the spread by more than 20% "
                   f"(conservative) for {len(wide)} numbers.")
    if not len(bad) and not len(wide):
        out.append("\nCheck: every predicted half-width is within 20% of the simulated spread.")
    return "\n".join(out)


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
        out.append(f"| {i} | {c.cost:.4g} | ±{c.width:.1%} | {seeds} | {k['dense_seeds']} "
                   f"| {', '.join(k['lr_sizes']) or 'none'} | {'yes' if k['dense_rungs'] else 'no'}"
                   f" | {len(k['sizes'])} |")
    if reference is not None:
        out.append(f"\nThe grid as it stands: {reference[1]:.4g} GPU-hours, ±{reference[0]:.1%}.")
    return "\n".join(out)
