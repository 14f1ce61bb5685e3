"""Checkpoints that survive the disk (issue 29), with the real training job against a real
`mlflow server`: a corrupt last.ckpt falls back to the previous one, a full disk (a small tmpfs,
as root) is a clear error that keeps the previous checkpoint, and no checkpoint passes through
the system temp folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile

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

from leviathan.training.signals import REHEARSE_PREEMPTION_ENV

KEYS = ("train/loss", "lr", "grad_norm", "tokens_seen")


def preempt_at(args: list[str], run: str, step: int) -> str:
    """Run the CLI until it holds at `step` (a preemption rehearsal), SIGTERM it, return its
    output (the checkpoint is written at that step)."""
    proc = run_cli(args, env={**os.environ, REHEARSE_PREEMPTION_ENV: f"{run}@{step}"})
    out = sigterm_at(proc, f"holding at step {step}")
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    return out


def step_of(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_cut_last_checkpoint_resumes_from_the_previous_one(tmp_path, data_dir, mlflow_server):
    """SIGTERM at step 10 (checkpoints at 4, 8 and 10), last.ckpt cut in half: the same command
    moves it aside, resumes from step 8, re-runs 9-10 and finishes; every metric step appears
    once in MLflow, equal to a straight run's."""
    from leviathan.training.run import train

    steps = 12
    straight = train(compose(tiny(data_dir, tmp_path / "a", mlflow_server, "run_name=straight-c",
                                  steps=steps)))
    args = tiny(data_dir, tmp_path / "b", mlflow_server, "run_name=cut", steps=steps)
    preempt_at(args, "cut", 10)
    run_dir = tmp_path / "b" / "runs" / "cut"
    assert step_of(run_dir / "last.ckpt") == 10 and step_of(run_dir / "prev_8.ckpt") == 8
    assert not (run_dir / "prev_4.ckpt").exists()  # keep_checkpoints=2
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert [s for s, _ in history(mlflow_server, run_id, "train/loss")] == list(range(1, 11))
    last = run_dir / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a node lost mid-copy

    proc = run_cli(args)  # the same command again
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    assert f"checkpoint {last} is corrupt" in out and "moved aside to last.ckpt.corrupt" in out
    assert "resuming from prev_8.ckpt, the newest intact checkpoint (step 8)" in out
    assert (run_dir / "last.ckpt.corrupt").is_file() and step_of(last) == steps
    assert client(mlflow_server).get_run(run_id).info.status == "FINISHED"
    for key in KEYS:
        a = one_value_per_step(mlflow_server, straight["run_id"], key)
        b = one_value_per_step(mlflow_server, run_id, key)
        assert len(a) == len(b) == steps, key
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-6,
                                   msg=lambda m, k=key: f"{k}: {m}")
    assert [s for s, _ in history(mlflow_server, run_id, "val/loss")] == [4, 8, 12]

    # every kept checkpoint corrupt: one line, exit 2; restart_if_corrupt=true starts afresh
    args2 = tiny(data_dir, tmp_path / "c", mlflow_server, "run_name=allbad", steps=6)
    preempt_at(args2, "allbad", 5)
    run_dir = tmp_path / "c" / "runs" / "allbad"
    for p in (run_dir / "last.ckpt", run_dir / "prev_4.ckpt"):
        p.write_bytes(p.read_bytes()[:1000])
    proc = run_cli(args2)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2, out[-3000:]
    assert "error: " in out and "no intact checkpoint (2 corrupt" in out, out[-3000:]
    assert "Traceback" not in out
    proc = run_cli([*args2, "trainer.restart_if_corrupt=true"])
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    assert step_of(run_dir / "last.ckpt") == 6
    rid = (run_dir / "mlflow_run_id").read_text().strip()
    assert len(one_value_per_step(mlflow_server, rid, "train/loss")) == 6


def mount_tmpfs(path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")


def fill(path, leave: int) -> None:
    """Write a file that leaves `leave` bytes free on `path`'s filesystem."""
    with open(path, "wb") as f:
        chunk = b"\0" * (1 << 20)
        while (free := shutil.disk_usage(path.parent).free) > leave:
            f.write(chunk[: min(len(chunk), free - leave)])
            f.flush()


@pytest.mark.integration
@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_that_keeps_the_previous_checkpoint(tmp_path, data_dir,
                                                                         mlflow_server):
    """The scratch folder on a 32 MB tmpfs, filled while the job holds at step 5 (after its
    step-4 checkpoint): the step-5 checkpoint fails with exit 74 and one line naming the folder,
    the bytes needed and free; no temporary file is left, the step-4 checkpoint loads, and once
    space is freed the same command resumes and finishes."""
    scratch = tmp_path / "scratch"
    mount_tmpfs(scratch, "32m")
    try:
        args = tiny(data_dir, scratch, mlflow_server, "run_name=full", steps=8)
        proc = run_cli(args, env={**os.environ, REHEARSE_PREEMPTION_ENV: "full@5"})
        lines = []
        run_dir = scratch / "runs" / "full"
        filler = scratch / "filler"
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("holding at step 5"):
                size = (run_dir / "last.ckpt").stat().st_size
                fill(filler, leave=size // 4)  # room for the outbox, not for a checkpoint
                proc.send_signal(signal.SIGTERM)
                break
        out = "".join(lines) + proc.communicate(timeout=300)[0]
        assert proc.returncode == 74, out[-3000:]
        err = [ln for ln in out.splitlines() if ln.startswith("error: ")]
        assert len(err) == 1 and "Traceback" not in out, out[-3000:]
        assert f"no space left on device in {run_dir}: needs " in err[0]
        assert "bytes free" in err[0] and "previous checkpoint is kept" in err[0]
        assert not list(run_dir.glob(".*.tmp")), sorted(p.name for p in run_dir.iterdir())
        assert step_of(run_dir / "last.ckpt") == 4
        run_id = (run_dir / "mlflow_run_id").read_text().strip()
        run = client(mlflow_server).get_run(run_id)
        assert run.info.status == "FAILED" and run.data.tags["failure_kind"] == "disk_full"
        from leviathan.sweep.liveness import run_state

        assert run_state("failed", run) == "disk full"

        filler.unlink()  # space freed: the same command resumes from step 4
        proc = run_cli(args)
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-3000:]
        assert f"resuming from {run_dir / 'last.ckpt'}" in out
        assert client(mlflow_server).get_run(run_id).info.status == "FINISHED"
        for key in KEYS:
            assert len(one_value_per_step(mlflow_server, run_id, key)) == 8, key
    finally:
        subprocess.run(["umount", str(scratch)], check=False)


@pytest.mark.integration
@pytest.mark.slow
def test_checkpoints_never_touch_the_system_temp_folder(tmp_path, data_dir, mlflow_server,
                                                        monkeypatch):
    """The temp folder points at a folder that does not exist for the whole run (TMPDIR and
    Python's tempfile.tempdir: as root nothing is unwritable by permissions, and tempfile
    falls back to /tmp when TMPDIR is unusable, so the folder's absence is what bites).
    Lightning's stock checkpoint IO fails there; the run checkpoints three times and finishes."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from leviathan.training.run import train

    nowhere = tmp_path / "no-temp-folder"
    monkeypatch.setenv("TMPDIR", str(nowhere))
    monkeypatch.setattr(tempfile, "tempdir", str(nowhere))
    with pytest.raises(FileNotFoundError, match="no-temp-folder"):  # the check can fail
        TorchCheckpointIO().save_checkpoint({"x": torch.zeros(3)}, tmp_path / "stock.ckpt")
    cfg = compose(tiny(data_dir, tmp_path, mlflow_server, "run_name=notmp",
                       "trainer.ckpt_every=2", steps=6))
    summary = train(cfg)  # checkpoints at steps 2, 4 and 6
    run_dir = tmp_path / "runs" / "notmp"
    assert summary["steps"] == 6 and step_of(run_dir / "last.ckpt") == 6
    assert step_of(run_dir / "prev_4.ckpt") == 4 and not (run_dir / "prev_2.ckpt").exists()
    assert not nowhere.exists()
