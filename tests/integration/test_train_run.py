"""End-to-end training runs on CPU against a real `mlflow server`, on the debug demo corpus
(written and prepared by the data package in a temporary directory); the runs are
helpers.train's tiny ones (debug_2k for mechanics, o200k_base for the tiny run per arm).
"""

from __future__ import annotations

import copy
import json
import signal
import time

import pytest
import torch
from helpers.train import (
    client,
    compose,
    history,
    one_value_per_step,
    run_cli,
    sigterm_at,
    tiny,
)


# ------------------------------------------------------------------ fail fast, before the model
def test_unreachable_server_fails_at_once_naming_the_uri_when_asked(tmp_path, data_dir):
    from leviathan.tracking.server import TrackingUnreachable, free_port
    from leviathan.training.run import train

    uri = f"http://127.0.0.1:{free_port()}"
    cfg = compose(tiny(data_dir, tmp_path, uri, "tracking.connect_timeout_s=1",
                       "tracking.start_timeout_s=0"))  # 0: fail at once (default: train anyway)
    t = time.monotonic()
    with pytest.raises(TrackingUnreachable, match=uri.replace(".", r"\.")):
        train(cfg)
    assert time.monotonic() - t < 30
    assert not (tmp_path / "runs").exists()  # nothing built, nothing written


def test_missing_data_path_fails_before_the_model(tmp_path):
    from leviathan.data import DataError
    from leviathan.training.run import train

    missing = tmp_path / "no-such-corpus"
    cfg = compose(tiny(tmp_path, tmp_path, "http://127.0.0.1:9", "data.mode=stream",
                       f"data.path={missing}", "data.build_corpus=null"))
    with pytest.raises(DataError, match="no-such-corpus"):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def test_bad_trainer_config_fails_naming_the_key(tmp_path):
    from leviathan.training.config import TrainConfigError
    from leviathan.training.run import train

    cfg = compose(tiny(tmp_path, tmp_path, "http://127.0.0.1:9", "trainer.micro_batch=2",
                       "trainer.global_batch=5"))
    with pytest.raises(TrainConfigError, match=r"trainer\.global_batch"):
        train(cfg)


# ------------------------------------------------------------------ real runs
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("arm", ["dense", "leviathan"])
def test_tiny_run_lands_in_mlflow(arm, tmp_path, data_dir, mlflow_server):
    from leviathan.tracking.environment import capture
    from leviathan.training.run import train

    steps = 8
    # the Leviathan run is given a nominal peak (1e11 FLOP/s) so that it also logs MFU
    peak = ["trainer.peak_flops=1e11"] if arm == "leviathan" else []
    cfg = compose(tiny(data_dir, tmp_path, mlflow_server, "meta.sweep=unit", "meta.pair=p0",
                       "meta.family=isobody", *peak, steps=steps, arm=arm,
                       vocab="o200k_base"))
    summary = train(cfg)
    run = client(mlflow_server).get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    for k, v in {"kind": "train", "arm": arm, "size": "debug", "sweep": "unit", "pair": "p0",
                 "family": "isobody", "config_hash": summary["config_hash"]}.items():
        assert tags[k] == v, k
    assert len(tags["data_fingerprint"]) == 64 and tags["git_commit"]
    assert params["model.d_model"] == "32" and params["model.arm"] == arm
    assert params["trainer.global_batch"] == "2" and params["data.seq_len"] == "32"
    assert int(params["n_params/total"]) == summary["n_params"]["total"] > 0
    for k in ("input", "head", "body"):
        assert int(params[f"n_params/{k}"]) == summary["n_params"][k]
    train_loss = one_value_per_step(mlflow_server, run.info.run_id, "train/loss")
    assert len(train_loss) == steps and all(map(torch.isfinite, torch.tensor(train_loss)))
    for key in ("lr", "grad_norm", "tokens_seen"):
        assert len(one_value_per_step(mlflow_server, run.info.run_id, key)) == steps
    assert [s for s, _ in history(mlflow_server, run.info.run_id, "val/loss")] == [4, 8]
    assert history(mlflow_server, run.info.run_id, "val/tokens")[-1] == (8, 8 * 2 * 32)
    assert metrics["tokens_per_s"] > 0 and metrics["flops_per_s"] > 0
    if peak:
        assert metrics["mfu"] == pytest.approx(metrics["flops_per_s"] / 1e11)
        assert len(one_value_per_step(mlflow_server, run.info.run_id, "mfu")) == steps
    else:
        assert "mfu" not in metrics  # trainer=cpu has no peak FLOP/s: only FLOP/s is logged
    freq = {k: v for k, v in metrics.items() if k.startswith("val/loss_freq/")}
    assert len(freq) >= 3  # validation targets span several frequency buckets
    assert metrics["final/val_loss"] == pytest.approx(summary["final_val_loss"])
    assert metrics["final/tokens_seen"] == steps * 2 * 32 == summary["tokens_seen"]
    arts = {a.path for a in client(mlflow_server).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "environment.json"} <= arts
    # python, torch, lightning, ..., cuda, cudnn, gpu and the hash of the full installed set
    assert {k: params[f"env.{k}"] for k in capture().versions()} == capture().versions()
    assert summary["buckets"]["names"][0] == "q00-10"  # deciles of the validation tokens
    assert set(summary["bucket_losses"]) <= set(summary["buckets"]["names"])
    print(f"\n{arm}: tokens/s {metrics['tokens_per_s']:.0f}, achieved FLOP/s "
          f"{metrics['flops_per_s']:.3e}, mfu {metrics.get('mfu', 'n/a')}, flops/token "
          f"{summary['plan']['flops_per_token']:.4g}")
    # the same command again finds the finished run and does not train twice
    assert train(cfg)["run_id"] == summary["run_id"]


@pytest.mark.integration
@pytest.mark.slow
def test_finished_run_left_running_in_mlflow_is_marked_finished(tmp_path, data_dir,
                                                                 mlflow_server):
    """A job killed after writing summary.json but before its final status reached MLflow
    (the final send waits up to final_flush_spread_s) left its run RUNNING: starting the same
    command again finds the finished run folder and marks the MLflow run FINISHED."""
    from leviathan.training.run import train

    cfg = compose(tiny(data_dir, tmp_path, mlflow_server, "run_name=left-running", steps=2))
    run_id = train(cfg)["run_id"]
    client(mlflow_server).update_run(run_id, status="RUNNING")  # what the kill left
    assert client(mlflow_server).get_run(run_id).info.status == "RUNNING"
    assert train(cfg)["run_id"] == run_id  # no training: the run folder says it finished
    assert client(mlflow_server).get_run(run_id).info.status == "FINISHED"


@pytest.mark.integration
@pytest.mark.slow
def test_lean_loss_run_matches_the_plain_loss_run(tmp_path, data_dir, mlflow_server):
    """trainer.loss_impl=chunked (the default; 16-token chunks: two per micro-batch) against
    plain: the same train/loss and grad_norm at every step, the same validation loss."""
    from leviathan.training.run import train

    runs = {}
    for impl in ("plain", "chunked"):
        cfg = compose(tiny(data_dir, tmp_path, mlflow_server, f"trainer.loss_impl={impl}",
                           "trainer.loss_chunk=16", f"run_name=loss-{impl}", steps=4,
                           arm="leviathan"))
        runs[impl] = train(cfg)["run_id"]
    for key, tol in (("train/loss", 1e-5), ("grad_norm", 1e-4), ("val/loss", 1e-5)):
        plain = one_value_per_step(mlflow_server, runs["plain"], key)
        lean = one_value_per_step(mlflow_server, runs["chunked"], key)
        assert len(plain) == len(lean) > 0, key
        assert lean == pytest.approx(plain, rel=tol), key


@pytest.mark.integration
@pytest.mark.slow
def test_nan_loss_stops_marks_failed_and_keeps_last_good_checkpoint(tmp_path, data_dir,
                                                                   mlflow_server):
    from leviathan.training.module import NonFiniteLoss
    from leviathan.training.run import train

    cfg = compose(tiny(data_dir, tmp_path, mlflow_server, "trainer.lr=1e30",
                       "trainer.min_lr=1e30", "trainer.warmup_steps=0", "trainer.ckpt_every=1",
                       "trainer.grad_clip=0", "run_name=diverges", steps=6))
    with pytest.raises(NonFiniteLoss, match="non-finite"):  # the gradients overflow first
        train(cfg)
    run_dir = tmp_path / "runs" / "diverges"
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client(mlflow_server).get_run(run_id)
    assert run.info.status == "FAILED"
    assert "non-finite" in run.data.tags["failure_reason"]
    failed_at = int(run.data.tags["failed_at_step"])
    ckpt = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == failed_at - 1 >= 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert not (run_dir / "summary.json").exists()
    # weights so large the very first forward pass overflows: the loss itself is NaN
    cfg = compose(tiny(data_dir, tmp_path, mlflow_server, "model.init_std=1e18",
                       "run_name=nan-at-init", steps=3))
    with pytest.raises(NonFiniteLoss, match=r"non-finite train/loss=nan at step 1"):
        train(cfg)
    run_id = (tmp_path / "runs" / "nan-at-init" / "mlflow_run_id").read_text().strip()
    run = client(mlflow_server).get_run(run_id)
    assert run.info.status == "FAILED" and "train/loss=nan" in run.data.tags["failure_reason"]


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_then_resume_matches_the_straight_run(tmp_path, data_dir, mlflow_server):
    """N steps straight vs. a subprocess killed by a real SIGTERM mid-run and then resumed to
    N: the same loss at every step, one value per step, one MLflow run."""
    from leviathan.training.run import train

    steps = 10
    straight = train(compose(tiny(data_dir, tmp_path / "a", mlflow_server, "run_name=straight",
                                  "trainer.ckpt_every=100", steps=steps)))
    split = tiny(data_dir, tmp_path / "b", mlflow_server, "run_name=split",
                 "trainer.ckpt_every=100", steps=steps)
    proc = run_cli(split)
    out = sigterm_at(proc, "step 2/")  # training under way: preempt it
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "preempted at step" in out
    run_dir = tmp_path / "b" / "runs" / "split"
    ckpt = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)
    stopped = ckpt["global_step"]
    assert 2 <= stopped < steps, out[-3000:]  # a checkpoint on the signal, not a periodic one
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    run = client(mlflow_server).get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["preempted_at_step"] == str(stopped)

    resumed = train(compose(split))  # the same command again: resumes
    assert resumed["run_id"] == run_id
    assert client(mlflow_server).get_run(run_id).info.status == "FINISHED"
    for key in ("train/loss", "lr", "grad_norm", "tokens_seen"):
        a = one_value_per_step(mlflow_server, straight["run_id"], key)
        b = one_value_per_step(mlflow_server, run_id, key)
        assert len(a) == len(b) == steps, key
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-6,
                                   msg=lambda m, k=key: f"{k}: {m}")
    assert [s for s, _ in history(mlflow_server, run_id, "val/loss")] == [4, 8, 10]
    assert resumed["final_val_loss"] == pytest.approx(straight["final_val_loss"], rel=1e-5)
    # what it cost: both attempts, each step timed once (the first up to its checkpoint)
    assert (straight["cost"]["attempts"], resumed["cost"]["attempts"]) == (1, 2)
    assert straight["cost"]["steps_timed"] == resumed["cost"]["steps_timed"] == steps
    assert resumed["cost"]["wall_s"] > resumed["wall_s"] and resumed["cost"]["device"] == "cpu"


@pytest.mark.integration
@pytest.mark.slow
def test_two_process_ddp_preempted_and_resumed_matches_single_process(tmp_path, data_dir,
                                                                     mlflow_server):
    """2 CPU ranks (gloo) x 1 micro-batch == 1 process x 2 accumulated micro-batches: the same
    windows per step (rank r reads the disjoint share the data contract assigns), the same loss
    curve, one MLflow run; and so even when the 2-rank run is preempted by a real SIGTERM and
    the same command resumes it (issue 41.1: each rank restores its own data position; Lightning
    once restored rank 0's on every rank and the resume failed)."""
    from leviathan.data import build_train_stream
    from leviathan.training.checkpoints import CheckpointStore
    from leviathan.training.config import TrainConfigError
    from leviathan.training.run import train

    steps = 6
    common = ("trainer.val_every=2", "trainer.ckpt_every=100")
    single = train(compose(tiny(data_dir, tmp_path / "single", mlflow_server, *common,
                                "run_name=single", steps=steps)))
    ddp_args = tiny(data_dir, tmp_path / "ddp", mlflow_server, *common, "run_name=ddp",
                    "trainer.devices=2", "trainer.strategy=ddp", steps=steps)
    proc = run_cli(ddp_args)
    out = sigterm_at(proc, "step 2/")
    assert proc.returncode == 128 + signal.SIGTERM, out[-4000:]
    assert "MEMBER: 2/2" in out, out[-4000:]  # Lightning started the second rank
    run_dir = tmp_path / "ddp" / "runs" / "ddp"
    ckpt = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert 2 <= ckpt["global_step"] < steps, out[-4000:]  # saved on the signal
    run_id = (run_dir / "mlflow_run_id").read_text().strip()

    # another layout is refused before any rank starts, naming the keys; nothing moved
    with pytest.raises(TrainConfigError, match=r"trainer.devices, trainer.strategy: .* trained "
                       r"with trainer.devices=2, trainer.strategy=ddp; this start has "
                       r"trainer.devices=1, trainer.strategy=auto"):
        train(compose([*ddp_args, "trainer.devices=1", "trainer.strategy=auto"]))
    assert (run_dir / "last.ckpt").is_file()

    # one rank fails on its own (its data position damaged): MLflow says which and why, not
    # rank 0's "Connection closed by peer"
    store = CheckpointStore(run_dir)
    (cb_key,) = [k for k, v in ckpt["callbacks"].items() if "data" in v]
    bad = copy.deepcopy(ckpt)
    bad["callbacks"][cb_key]["data"][1]["stream"]["key"]["seed"] = 999
    store.save(bad, ckpt["global_step"])
    proc = run_cli(ddp_args)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode != 0, out[-4000:]
    reason = client(mlflow_server).get_run(run_id).data.tags["failure_reason"]
    assert reason.startswith("rank 1: DataError: data state was saved with other settings: "
                             "seed: 999 != "), reason
    store.save(ckpt, ckpt["global_step"])

    proc = run_cli(ddp_args)  # the same command again: both ranks resume
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-4000:]
    assert "resuming from" in out, out[-4000:]
    verdict = json.loads((run_dir / "resume.json").read_text())  # rank 0 verified, rank 1 took it
    assert verdict["checkpoint"] == str(run_dir / "last.ckpt") and verdict["error"] is None
    runs = client(mlflow_server).search_runs(
        [client(mlflow_server).get_experiment_by_name("test-train").experiment_id],
        filter_string="tags.run_key = 'ddp'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["plan.world_size"] == "2"
    assert runs[0].data.params["plan.accumulation"] == "1"
    a = one_value_per_step(mlflow_server, single["run_id"], "train/loss")
    b = one_value_per_step(mlflow_server, runs[0].info.run_id, "train/loss")
    assert len(a) == len(b) == steps
    torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-4, atol=1e-5)
    va = history(mlflow_server, single["run_id"], "val/loss")
    vb = history(mlflow_server, runs[0].info.run_id, "val/loss")
    assert [s for s, _ in va] == [s for s, _ in vb] == [2, 4, 6]
    torch.testing.assert_close(torch.tensor([v for _, v in vb]),
                               torch.tensor([v for _, v in va]), rtol=1e-4, atol=1e-5)
    # the shares the two ranks trained on: disjoint, and together the single run's step
    data = compose(ddp_args).data
    r0 = iter(build_train_stream(data, batch_size=1, rank=0, world_size=2))
    r1 = iter(build_train_stream(data, batch_size=1, rank=1, world_size=2))
    s = iter(build_train_stream(data, batch_size=1))
    for _ in range(steps):
        b0, b1 = next(r0), next(r1)
        assert not torch.equal(b0, b1)
        assert torch.equal(torch.cat([b0, b1]), torch.cat([next(s), next(s)]))


@pytest.mark.gpu
@pytest.mark.integration
@pytest.mark.slow
def test_tiny_gpu_run_bf16_logs_mfu(tmp_path, data_dir, mlflow_server):
    """trainer=gpu (bf16-mixed, fused AdamW, peak FLOP/s from the config): MFU is logged."""
    from leviathan.training.run import train

    base = [o for o in tiny(data_dir, tmp_path, mlflow_server, steps=6) if o != "trainer=debug"]
    cfg = compose([*base, "trainer=gpu",
                   "trainer.global_batch=8", "trainer.micro_batch=4", "trainer.max_steps=6",
                   "trainer.val_every=3", "trainer.ckpt_every=3", "trainer.log_every=1"])
    summary = train(cfg)
    metrics = client(mlflow_server).get_run(summary["run_id"]).data.metrics
    assert 0 < metrics["mfu"] < 1 and metrics["tokens_per_s"] > 0
    assert summary["final_val_loss"] < 13
    print(f"\ngpu: tokens/s {metrics['tokens_per_s']:.0f}, mfu {metrics['mfu']:.4f}")


# ------------------------------------------------------------------ secrets
@pytest.mark.integration
@pytest.mark.slow
def test_a_login_in_the_uri_is_in_no_file_the_run_writes(tmp_path, data_dir, mlflow_server):
    """Issue 34.7: `python -m leviathan.train tracking.uri=http://alice:<password>@host` (the
    real CLI, a real server): the password is in no file under the scratch folder, Hydra's run
    folder included (Hydra keeps no copy of the config: the run's masked config.yaml is the
    record), nor in what the job prints."""
    import secrets

    canary = f"Canary{secrets.token_hex(8)}"
    uri = mlflow_server.replace("http://", f"http://alice:{canary}@")
    proc = run_cli(tiny(data_dir, tmp_path, uri, "run_name=canary", steps=2))
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-5000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.parts[-2].startswith("20") for p in files if "hydra" in p.parts), files
    assert (tmp_path / "runs" / "canary" / "last.ckpt") in files
    leaks = [str(p.relative_to(tmp_path)) for p in files if canary.encode() in p.read_bytes()]
    assert leaks == [] and canary not in out
    assert "http://***@127.0.0.1" in (tmp_path / "runs" / "canary" / "config.yaml").read_text()
