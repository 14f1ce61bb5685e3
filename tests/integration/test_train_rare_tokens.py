"""The rare-token metric in the paper's setting: a streaming run (no prepared index) counts
training frequencies over a prefix of its stream and logs the validation loss per decile of
the validation tokens, rarest first."""

from __future__ import annotations

import pytest
from helpers.train import client, compose, tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_streaming_run_logs_quantile_buckets(tmp_path, data_dir, mlflow_server):
    from leviathan.data import ensure_data
    from leviathan.training.run import train

    # o200k_base: how rare a token is depends on the 200k vocabulary (debug_2k's 2,048 ids are
    # each too frequent for ten populated deciles of a small validation set)
    ensure_data(compose(tiny(data_dir, tmp_path, mlflow_server, vocab="o200k_base")).data)
    summary = train(compose(tiny(
        data_dir, tmp_path, mlflow_server, "run_name=stream-buckets", "data.mode=stream",
        "data.prepared_dir=null", "data.auto_prepare=false", "data.freq_tokens=4000",
        f"data.freq_cache_dir={tmp_path / 'counts'}", steps=4, vocab="o200k_base")))
    metrics = client(mlflow_server).get_run(summary["run_id"]).data.metrics
    names = [f"q{10 * i:02d}-{10 * (i + 1):02d}" for i in range(10)]
    assert summary["buckets"]["names"] == names
    # a token is indivisible: one holding more than a tenth of a small validation set spans
    # deciles, and the deciles it skips have no target (left out, not logged as 0)
    logged = [n for n in names if f"val/loss_freq/{n}" in metrics]
    assert logged[0] == "q00-10" and len(logged) >= 6, sorted(metrics)
    assert set(summary["bucket_losses"]) == set(logged)
    assert list((tmp_path / "counts").glob("counts-*-4000.npy"))  # counted once, cached
    # rarest first: the smallest training count in each decile never falls (4 steps teach the
    # model too little for the losses themselves to be ordered yet)
    edges = [e for n, e in zip(names, summary["buckets"]["lower_count_edges"], strict=True)
             if n in logged]
    assert edges == sorted(edges) and edges[0] < edges[-1], edges
