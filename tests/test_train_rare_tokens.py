"""The rare-token metric in the paper's setting: a streaming run (no prepared index) counts
training frequencies over a prefix of its stream and logs the validation loss per decile of
the validation tokens, rarest first."""

from __future__ import annotations

import pytest
from test_train_run import client, compose, tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_streaming_run_logs_quantile_buckets(tmp_path, data_dir, mlflow_server):
    from leviathan.data import ensure_data
    from leviathan.training.run import train

    ensure_data(compose(tiny(data_dir, tmp_path, mlflow_server)).data)  # the debug corpus
    summary = train(compose(tiny(
        data_dir, tmp_path, mlflow_server, "run_name=stream-buckets", "data.mode=stream",
        "data.prepared_dir=null", "data.auto_prepare=false", "data.freq_tokens=4000",
        f"data.freq_cache_dir={tmp_path / 'counts'}", steps=4)))
    metrics = client(mlflow_server).get_run(summary["run_id"]).data.metrics
    names = [f"q{10 * i:02d}-{10 * (i + 1):02d}" for i in range(10)]
    assert all(f"val/loss_freq/{n}" in metrics for n in names), sorted(metrics)
    assert summary["buckets"]["names"] == names
    assert list((tmp_path / "counts").glob("counts-*-4000.npy"))  # counted once, cached
    # the rarest tenth of what the model must predict is harder than the most frequent tenth
    assert metrics["val/loss_freq/q00-10"] > metrics["val/loss_freq/q90-100"]
