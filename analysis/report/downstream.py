"""The downstream table in markdown: per matched pair, each task's Dense and Leviathan score and
their difference with its standard error (analysis/inputs/downstream.py reads them)."""

from __future__ import annotations

import pandas as pd

from analysis.inputs.downstream import from_mlflow, pair_table
from analysis.report.format import score


def downstream_md(table: pd.DataFrame) -> str:
    """Markdown: one table per family, rows pair x task x metric."""
    if table.empty:
        return "No downstream results (no pair has both arms evaluated).\n"
    out = []
    for family, ft in table.groupby("family", sort=True):
        out.append(f"### Downstream ({family})\n")
        out.append("| pair | size | task | metric | Dense | Leviathan | Δ (L − D) ± se | rel | "
                   "better |")
        out.append("|---|---|---|---|---:|---:|---:|---:|---|")
        for r in ft.itertuples(index=False):
            out.append(f"| {r.pair} | {r.size} | {r.task} | {r.metric} | "
                       f"{score(r.dense)} ± {score(r.dense_se)} | {score(r.leviathan)} ± "
                       f"{score(r.leviathan_se)} | {score(r.delta)} ± {score(r.delta_se)} | "
                       f"{score(100 * r.rel, 3)}% | {r.better} |")
        out.append("")
    out.append("Δ: Leviathan − Dense; se = sqrt(se_D² + se_L²) from the harness's standard "
               "errors; better: |Δ/se| ≥ 2, lower is better for perplexities.\n")
    return "\n".join(out)


def downstream_section(sweep: str, *, tracking_uri: str, experiment: str = "leviathan",
                       metrics: list[str] | None = None) -> str:
    """The report's downstream markdown for `sweep`; "" when none of its runs has eval
    metrics."""
    long = from_mlflow(sweep, tracking_uri=tracking_uri, experiment=experiment)
    if long.empty:
        return ""
    return downstream_md(pair_table(long, metrics))
