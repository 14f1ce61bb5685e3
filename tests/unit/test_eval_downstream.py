"""The per-pair downstream table (analysis.inputs.downstream) on metrics shaped as leviathan.eval
logs them; test_eval_run.py reads the same table back from a real MLflow server."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.inputs.downstream import collect, pair_table, parse_metrics
from analysis.report.downstream import downstream_md

RUNS = pd.DataFrame([
    {"run_id": "d1", "pair": "p1", "arm": "dense", "size": "200M", "family": "isobody"},
    {"run_id": "l1", "pair": "p1", "arm": "leviathan", "size": "200M", "family": "isobody"},
    {"run_id": "d2", "pair": "p2", "arm": "dense", "size": "400M", "family": "isobody"},
    {"run_id": "l2", "pair": "p2", "arm": "leviathan", "size": "400M", "family": "isobody"},
    {"run_id": "d3", "pair": "p3", "arm": "dense", "size": "700M", "family": "isobody"},
])
METRICS = {
    "d1": {"eval/lambada_openai/perplexity": 40.0, "eval/lambada_openai/perplexity_stderr": 2.0,
           "eval/lambada_openai/acc": 0.30, "eval/lambada_openai/acc_stderr": 0.006,
           "eval/piqa/acc": 0.60, "eval/piqa/acc_stderr": 0.011, "val/loss": 3.2,
           "eval_limit50/piqa/acc": 0.9},
    "l1": {"eval/lambada_openai/perplexity": 28.0, "eval/lambada_openai/perplexity_stderr": 1.5,
           "eval/lambada_openai/acc": 0.33, "eval/lambada_openai/acc_stderr": 0.0065,
           "eval/piqa/acc": 0.61, "eval/piqa/acc_stderr": 0.011},
    "d2": {"eval/mmlu/stem/acc": 0.25, "eval/mmlu/stem/acc_stderr": 0.01},
    "l2": {"eval/mmlu/stem/acc": 0.26},  # no stderr logged
    "d3": {"eval/piqa/acc": 0.65, "eval/piqa/acc_stderr": 0.01},  # no Leviathan partner
}


def test_parse_metrics_reads_only_eval_scores_with_their_stderr():
    got = parse_metrics(METRICS["d1"])
    assert got[("lambada_openai", "perplexity")] == (40.0, 2.0)
    assert got[("piqa", "acc")] == (0.60, 0.011)
    assert len(got) == 3  # val/loss and the quick look (eval_limit50/) are not scores
    nested = parse_metrics(METRICS["l2"])
    assert nested[("mmlu/stem", "acc")][0] == 0.26 and math.isnan(nested[("mmlu/stem", "acc")][1])


def test_pair_table_differences_and_standard_errors():
    table = pair_table(collect(RUNS, METRICS))
    assert set(table.pair) == {"p1", "p2"}  # p3 has no Leviathan run
    ppl = table[(table.pair == "p1") & (table.metric == "perplexity")].iloc[0]
    assert ppl["delta"] == pytest.approx(-12.0)
    assert ppl["delta_se"] == pytest.approx(math.sqrt(2.0 ** 2 + 1.5 ** 2))
    assert ppl["rel"] == pytest.approx(-0.30)
    assert ppl["better"] == "leviathan"  # lower perplexity, |z| = 4.8
    acc = table[(table.pair == "p1") & (table.task == "lambada_openai")
                & (table.metric == "acc")].iloc[0]
    assert acc["delta"] == pytest.approx(0.03)
    assert acc["z"] == pytest.approx(0.03 / math.hypot(0.006, 0.0065))
    assert acc["better"] == "leviathan"
    piqa = table[(table.pair == "p1") & (table.task == "piqa")].iloc[0]
    assert piqa["better"] == "~"  # within two standard errors
    stem = table[table.pair == "p2"].iloc[0]
    assert stem["task"] == "mmlu/stem" and stem["delta"] == pytest.approx(0.01)
    assert math.isnan(stem["delta_se"]) and stem["better"] == "~"
    only_acc = pair_table(collect(RUNS, METRICS), metrics=["acc"])
    assert set(only_acc.metric) == {"acc"}


def test_seeds_within_a_pair_are_averaged():
    runs = pd.DataFrame([{"run_id": f"{a}{s}", "pair": "p", "arm": arm, "size": "1", "family": ""}
                         for a, arm in (("d", "dense"), ("l", "leviathan")) for s in (0, 1)])
    m = {"d0": {"eval/t/acc": 0.5, "eval/t/acc_stderr": 0.02},
         "d1": {"eval/t/acc": 0.6, "eval/t/acc_stderr": 0.02},
         "l0": {"eval/t/acc": 0.7, "eval/t/acc_stderr": 0.02},
         "l1": {"eval/t/acc": 0.7, "eval/t/acc_stderr": 0.02}}
    row = pair_table(collect(runs, m)).iloc[0]
    assert row.dense == pytest.approx(0.55) and row.n_dense == 2
    assert row.dense_se == pytest.approx(math.sqrt(2) * 0.02 / 2)
    assert row.family == "default"


def test_markdown_rendering():
    md = downstream_md(pair_table(collect(RUNS, METRICS)))
    assert md.startswith("### Downstream (isobody)")
    line = next(x for x in md.splitlines() if "| p1 |" in x and "perplexity" in x)
    assert "40.0000 ± 2.0000" in line and "28.0000 ± 1.5000" in line
    assert "-12.0000 ± 2.5000" in line and "-30.000%" in line and "leviathan" in line
    assert "Leviathan − Dense" in md
    assert "No downstream results" in downstream_md(pair_table(collect(RUNS.iloc[:1], METRICS)))
