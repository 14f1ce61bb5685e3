"""The downstream table: per matched pair, each task's Dense and Leviathan score, the difference
(Leviathan - Dense) and its standard error sqrt(se_dense^2 + se_leviathan^2).

Scores are the MLflow metrics leviathan.eval logs on each training run: eval/<task>/<metric>
and eval/<task>/<metric>_stderr (the harness's standard errors) over whole task sets (quick
looks with eval.limit go to eval_limit<N>/... and are not read here). Use:

    long = from_mlflow(sweep, tracking_uri=uri, experiment="leviathan")  # a row per score
    table = pair_table(long)  # a row per pair x task x metric

and analysis/report/downstream.py for its markdown (`downstream_md(table)`, or
`downstream_section(sweep, tracking_uri=..., experiment=...)`: "" when no run of the sweep has
been evaluated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

PREFIX = "eval/"
LOWER_IS_BETTER = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")
LONG_COLUMNS = ["run_id", "pair", "arm", "size", "family", "task", "metric", "value", "stderr"]
PAIR_COLUMNS = ["family", "pair", "size", "task", "metric", "dense", "dense_se", "leviathan",
                "leviathan_se", "delta", "delta_se", "z", "rel", "better", "n_dense",
                "n_leviathan"]


def parse_metrics(metrics: Mapping[str, float]) -> dict[tuple[str, str], tuple[float, float]]:
    """{(task, metric): (value, stderr)} from a run's MLflow metrics (stderr NaN if absent).
    Task names may contain '/' (harness groups); the metric is the last path part."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for key, value in metrics.items():
        if not key.startswith(PREFIX) or key.endswith("_stderr"):
            continue
        task, _, metric = key[len(PREFIX):].rpartition("/")
        if not task:
            continue
        se = metrics.get(f"{key}_stderr", math.nan)
        out[(task, metric)] = (float(value), float(se) if se is not None else math.nan)
    return out


def collect(runs: pd.DataFrame, metrics_by_run: Mapping[str, Mapping[str, float]]
            ) -> pd.DataFrame:
    """Long table (LONG_COLUMNS) from a runs table (run_id, pair, arm, size, family, as in
    analysis.inputs.runs.Runs.table) and each run's MLflow metrics."""
    rows = []
    for r in runs.itertuples(index=False):
        for (task, metric), (v, se) in parse_metrics(metrics_by_run.get(r.run_id, {})).items():
            rows.append({"run_id": r.run_id, "pair": str(getattr(r, "pair", "") or ""),
                         "arm": str(r.arm).lower(), "size": str(getattr(r, "size", "") or ""),
                         "family": str(getattr(r, "family", "") or "default"), "task": task,
                         "metric": metric, "value": v, "stderr": se})
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def from_mlflow(sweep: str, *, tracking_uri: str, experiment: str = "leviathan") -> pd.DataFrame:
    """Long table for the training runs of `sweep` (tags.kind='train', tags.sweep)."""
    from analysis.inputs.mlflow_input import mlflow_client, require_experiment, search_runs

    client = mlflow_client(tracking_uri)
    exp_id = require_experiment(client, experiment, tracking_uri)
    runs = search_runs(client, exp_id, f"tags.kind = 'train' and tags.sweep = '{sweep}'")
    table = pd.DataFrame([{"run_id": r.info.run_id, "pair": r.data.tags.get("pair", ""),
                           "arm": r.data.tags.get("arm", ""), "size": r.data.tags.get("size", ""),
                           "family": r.data.tags.get("family", "")} for r in runs],
                         columns=["run_id", "pair", "arm", "size", "family"])
    return collect(table, {r.info.run_id: r.data.metrics for r in runs})


def _combine(g: pd.DataFrame) -> tuple[float, float, int]:
    """Mean of an arm's runs in a pair (several seeds) and the standard error of that mean."""
    v, se = g["value"].to_numpy(float), g["stderr"].to_numpy(float)
    n = len(v)
    return float(v.mean()), float(np.sqrt(np.sum(se ** 2)) / n), n


def pair_table(long: pd.DataFrame, metrics: list[str] | None = None,
               z_threshold: float = 2.0) -> pd.DataFrame:
    """One row per (family, pair, task, metric) with both arms: PAIR_COLUMNS. delta = Leviathan
    - Dense; delta_se = sqrt(dense_se^2 + leviathan_se^2); z = delta / delta_se; rel = delta /
    |Dense|; better = the arm whose score is better when |z| >= z_threshold, else "~"."""
    if metrics is not None:
        long = long[long["metric"].isin(metrics)]
    rows = []
    for (family, pair, task, metric), g in long.groupby(["family", "pair", "task", "metric"],
                                                       sort=True):
        arms = {a: gg for a, gg in g.groupby("arm")}
        if "dense" not in arms or "leviathan" not in arms:
            continue
        d, d_se, n_d = _combine(arms["dense"])
        lv, l_se, n_l = _combine(arms["leviathan"])
        diff = lv - d
        diff_se = math.sqrt(d_se ** 2 + l_se ** 2) if np.isfinite([d_se, l_se]).all() \
            else math.nan
        z = diff / diff_se if diff_se and np.isfinite(diff_se) else math.nan
        lower = metric in LOWER_IS_BETTER
        better = "~"
        if np.isfinite(z) and abs(z) >= z_threshold:
            better = "leviathan" if (diff < 0) == lower else "dense"
        rows.append({"family": family, "pair": pair,
                     "size": ",".join(sorted(set(arms["dense"]["size"]))), "task": task,
                     "metric": metric, "dense": d, "dense_se": d_se, "leviathan": lv,
                     "leviathan_se": l_se, "delta": diff, "delta_se": diff_se, "z": z,
                     "rel": diff / abs(d) if d else math.nan, "better": better,
                     "n_dense": n_d, "n_leviathan": n_l})
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)
