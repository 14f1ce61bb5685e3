"""The throughput bench runs end to end and ends with its JSON line."""

from __future__ import annotations

import json

import pytest
import torch

from leviathan.bench.__main__ import main as bench_main


@pytest.mark.slow
def test_throughput_bench_smoke(capsys):
    argv = ["throughput", "--steps", "2", "--warmup", "1", "--batch", "1", "--seq-len", "32",
            "--d-model", "64", "--n-layers", "1", "--n-heads", "2", "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        assert bench_main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert {"dense_tokens_per_s", "leviathan_tokens_per_s", "ratio"} <= result.keys()
    assert result["dense_tokens_per_s"] > 0 and result["leviathan_tokens_per_s"] > 0
    expected = result["leviathan_tokens_per_s"] / result["dense_tokens_per_s"]
    assert result["ratio"] == pytest.approx(expected, rel=1e-3)
    assert any(line.startswith("step   2:") for line in lines)


def test_throughput_bench_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        bench_main(["throughput", "--steps", "0"])
    assert "--steps must be positive" in capsys.readouterr().err


@pytest.mark.slow
def test_loss_bench_small_shape(capsys):
    """Plain vs lean on a small shape, each in its own process: equal losses and gradient
    norms, and the lean peak well under the plain one (the 200k-vocabulary figures: README)."""
    argv = ["loss", "--tokens", "512", "--vocab", "20000", "--dim", "32", "--chunk", "64",
            "--repeats", "1", "--threads", "1"]
    assert bench_main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    for key in ("plain_peak_mb", "lean_peak_mb", "plain_s", "lean_s"):
        assert result[key] > 0, key
    for key in ("loss_rel_diff", "h_grad_norm_rel_diff", "w_grad_norm_rel_diff"):
        assert result[key] < 1e-5, key
    assert result["lean_peak_mb"] * 3 < result["plain_peak_mb"]  # logits: 41 MB per fp32 copy
    assert result["memory"].startswith("cpu: VmHWM")


def test_loss_bench_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        bench_main(["loss", "--variants", "lean"])
    assert "--variants must name plain and lean" in capsys.readouterr().err
