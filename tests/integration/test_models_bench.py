"""The throughput bench runs end to end and ends with its JSON line."""

from __future__ import annotations

import json

import pytest
import torch

from leviathan.bench.__main__ import main as bench_main


def _run(argv: list[str], capsys) -> list[str]:
    """Run a bench in-process; its printed lines. --threads is process-wide: restored after."""
    threads = torch.get_num_threads()
    try:
        assert bench_main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out.strip().splitlines()


@pytest.mark.slow
def test_throughput_bench_smoke(capsys):
    argv = ["throughput", "--steps", "2", "--warmup", "1", "--batch", "1", "--seq-len", "32",
            "--d-model", "64", "--n-layers", "1", "--n-heads", "2", "--threads", "1"]
    lines = _run(argv, capsys)
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
@pytest.mark.parametrize("arm", ["dense", "leviathan"])
def test_loop_bench_trainer_and_plain_step_take_the_same_steps(capsys, arm):
    """bench loop times Lightning's Trainer (as runs build it) against the plain TrainStep on
    the same model and batches; both must end at the same loss, or the comparison is void."""
    argv = ["loop", "--arm", arm, "--steps", "2", "--warmup", "1", "--rounds", "2",
            "--batch", "2", "--seq-len", "16", "--d-model", "32", "--n-layers", "1",
            "--n-heads", "2", "--vocab", "512", "--threads", "1"]
    out = _run(argv, capsys)
    result = json.loads(out[-1])
    assert result["trainer_step_s"] > 0 and result["plain_step_s"] > 0
    assert result["overhead"] == pytest.approx(
        result["trainer_step_s"] / result["plain_step_s"] - 1, abs=1e-3)
    assert result["loss_abs_diff"] < 1e-5, result
    assert sum(line.startswith("round ") for line in out) == 4


def test_loop_bench_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        bench_main(["loop", "--warmup", "0"])
    assert "--warmup must be at least 1" in capsys.readouterr().err


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


@pytest.mark.slow
def test_lev_forms_bench_smoke(capsys):
    """Both forms: parameters equal to the built generator, timings, init scale (tiny vocab)."""
    from leviathan.models import count_params

    argv = ["lev", "--dims", "64", "--ids", "32", "--vocab", "512", "--repeats", "1",
            "--chunk", "256", "--train-steps", "0", "--threads", "1"]
    out = _run(argv, capsys)
    result = json.loads(out[-1])
    from leviathan.bench.lev import lev_config

    for form in ("blocks", "khronos"):
        r = result["forms"][f"{form}_D64"]
        assert r["params"] == count_params(lev_config(form, 64, "matmul", 512)).input
        assert r["ids_fwd_bwd_s"] > 0 and r["table_fwd_bwd_s"] > 0
        assert 0 < r["init_std"] < 1 and 0 <= r["init_shared"] <= 1
    assert "training" not in result
    assert any(line.startswith("khronos     64") for line in out)


@pytest.mark.slow
@pytest.mark.integration
def test_lev_forms_training_comparison_is_one_sweep_in_mlflow(mlflow_server, tmp_path,
                                                              tmp_path_factory):
    """Two short runs (blocks, khronos) of one sweep: children of its parent run, same data."""
    from mlflow.tracking import MlflowClient

    from leviathan.bench.lev_train import compare_forms

    data_dir = tmp_path_factory.getbasetemp() / "train-data"
    data_dir.mkdir(exist_ok=True)
    out = compare_forms(steps=2, seq_len=32, sweep="lev-forms-test", tracking_uri=mlflow_server,
                        overrides=["model=debug_small", "data.tokenizer=debug_2k",  # mechanics
                                   "model.d_model=32", "model.n_heads=2", "trainer.val_every=2",
                                   "model.lev.heads=2", "model.lev.rank=8",  # a small khronos
                                   "tracking.experiment=test-lev-forms",
                                   "tracking.flush_every_s=0.5", f"paths.data_dir={data_dir}",
                                   f"paths.scratch_dir={tmp_path}"])
    client = MlflowClient(mlflow_server)
    runs = {form: client.get_run(out[form]["run_id"]) for form in ("blocks", "khronos")}
    for form, run in runs.items():
        assert run.info.status == "FINISHED"
        tags, params = run.data.tags, run.data.params
        assert tags["mlflow.parentRunId"] == out["parent_run_id"]
        assert (tags["sweep"], tags["arm"], tags["family"]) == ("lev-forms-test", "leviathan",
                                                                "lev_forms")
        assert params["model.lev.form"] == form and params["model.arm"] == "leviathan"
        assert "train/loss" in run.data.metrics and "val/loss" in run.data.metrics
    parent = client.get_run(out["parent_run_id"])
    assert (parent.data.tags["kind"], parent.data.tags["sweep"]) == ("sweep", "lev-forms-test")
    assert out["blocks"]["lev_params"] != out["khronos"]["lev_params"]
    assert out["blocks"]["params"] - out["blocks"]["lev_params"] == (
        out["khronos"]["params"] - out["khronos"]["lev_params"])  # the same backbone and head
    assert len({runs[f].data.tags["data_fingerprint"] for f in runs}) == 1
