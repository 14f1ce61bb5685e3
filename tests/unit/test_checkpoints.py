"""The checkpoint files of a run folder (leviathan/training/checkpoints.py): written in place with
a checksum, the last k kept, the newest intact one found, a full disk named; and the sweep's
side of it (status `disk full`, the scratch-space pre-flight)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from types import SimpleNamespace

import pytest
import torch

from leviathan.training.checkpoints import (
    CheckpointDiskFull,
    CheckpointStore,
    InPlaceCheckpointIO,
    sha256_of,
)
from leviathan.training.config import config_hash
from leviathan.training.plan import checkpoint_bytes


def state(step: int, n: int = 1000) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"global_step": step, "state_dict": {"w": torch.randn(n, generator=g)}}


def names(run_dir) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir())


def test_saves_keep_the_last_k_with_their_checksums(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in (4, 8, 12):
        store.save(state(step), step)
    assert names(tmp_path) == ["checkpoints.json", "last.ckpt", "prev_8.ckpt"]  # no .tmp left
    recs = json.loads((tmp_path / "checkpoints.json").read_text())["files"]
    assert recs["last.ckpt"][0]["step"] == 12 and recs["prev_8.ckpt"][0]["step"] == 8
    for name in ("last.ckpt", "prev_8.ckpt"):
        assert recs[name][0]["sha256"] == sha256_of(tmp_path / name)
        assert recs[name][0]["bytes"] == (tmp_path / name).stat().st_size
    assert torch.load(tmp_path / "prev_8.ckpt", weights_only=False)["global_step"] == 8
    assert store.newest_intact() == (tmp_path / "last.ckpt", [])
    one = CheckpointStore(tmp_path / "one", keep=1)
    (tmp_path / "one").mkdir()
    for step in (4, 8):
        one.save(state(step), step)
    assert names(tmp_path / "one") == ["checkpoints.json", "last.ckpt"]
    three = CheckpointStore(tmp_path / "three", keep=3)
    (tmp_path / "three").mkdir()
    for step in (4, 8, 12, 16):
        three.save(state(step), step)
    assert names(tmp_path / "three") == ["checkpoints.json", "last.ckpt", "prev_12.ckpt",
                                         "prev_8.ckpt"]


def test_a_snapshot_stays_when_its_checkpoint_rotates_out(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    store.save(state(4), 4)
    snap = store.keep_snapshot(4)
    for step in (8, 12):
        store.save(state(step), step)
    assert snap.name == "step_4.ckpt" and "prev_4.ckpt" not in names(tmp_path)
    assert torch.load(snap, weights_only=False)["global_step"] == 4
    assert store.check(snap) is None  # recorded with the checksum of the checkpoint it was


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_corrupt_last_is_moved_aside_and_the_previous_one_taken(tmp_path, damage):
    store = CheckpointStore(tmp_path, keep=2)
    for step in (4, 8):
        store.save(state(step), step)
    last = tmp_path / "last.ckpt"
    data = bytearray(last.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":  # same size, one byte inside the tensor data
        data[len(data) // 2] ^= 0xFF
    else:
        data = bytearray()
    last.write_bytes(bytes(data))
    warned = []
    path, failed = store.newest_intact(warn=warned.append)
    assert path == tmp_path / "prev_4.ckpt" and store.step_of(path) == 4
    assert len(failed) == 1 and warned == failed
    assert "last.ckpt is corrupt" in failed[0] and "last.ckpt.corrupt" in failed[0]
    assert (tmp_path / "last.ckpt.corrupt").exists() and not last.exists()
    # the run goes on from there: the next save keeps what is intact and rotates as usual
    store.save(state(12), 12)
    assert names(tmp_path) == ["checkpoints.json", "last.ckpt", "last.ckpt.corrupt",
                               "prev_4.ckpt"]
    assert store.newest_intact() == (last, [])


def test_none_intact_and_unrecorded_files_are_loaded_to_be_judged(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in (4, 8):
        store.save(state(step), step)
    for name in ("last.ckpt", "prev_4.ckpt"):
        p = tmp_path / name
        p.write_bytes(p.read_bytes()[:100])
    path, failed = store.newest_intact()
    assert path is None and len(failed) == 2
    # an older version's checkpoint has no record: torch loading it is the check
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(state(3), legacy / "last.ckpt")
    assert CheckpointStore(legacy).newest_intact() == (legacy / "last.ckpt", [])
    (legacy / "last.ckpt").write_bytes(b"PK\x03\x04 not a zip")
    path, failed = CheckpointStore(legacy).newest_intact(move_aside=False)
    assert path is None and "does not load" in failed[0]
    assert (legacy / "last.ckpt").exists()  # not moved: only rank 0 moves files


def test_a_kill_between_the_manifest_and_the_rename_leaves_both_verifiable(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path, keep=2)
    store.save(state(4), 4)
    real = os.replace

    def killed(src, dst):
        if str(dst).endswith("last.ckpt"):
            raise KeyboardInterrupt  # the process dies right before the rename
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.save(state(8), 8)
    monkeypatch.setattr(os, "replace", real)
    assert not (tmp_path / ".last.ckpt.tmp").exists()
    assert store.newest_intact() == (tmp_path / "last.ckpt", [])  # the old one, still accepted
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 4
    (tmp_path / ".last.ckpt.tmp").write_bytes(b"half")  # what a SIGKILLed writer leaves
    assert store.newest_intact() == (tmp_path / "last.ckpt", [])
    assert not (tmp_path / ".last.ckpt.tmp").exists()  # removed by the resume (rank 0)


def test_disk_full_names_folder_needed_and_free_and_removes_its_temporary_file(tmp_path,
                                                                                monkeypatch):
    store = CheckpointStore(tmp_path, keep=2)
    store.save(state(4), 4)
    before = (tmp_path / "last.ckpt").read_bytes()
    real_write = torch.serialization._open_zipfile_writer_buffer

    class Full:
        def __init__(self, buffer):
            buffer.write(b"x" * 100)  # something reached the disk first
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.serialization, "_open_zipfile_writer_buffer", Full)
    with pytest.raises(CheckpointDiskFull) as info:
        store.save(state(8, n=250_000), 8)
    monkeypatch.setattr(torch.serialization, "_open_zipfile_writer_buffer", real_write)
    msg = str(info.value)
    assert str(tmp_path) in msg and "no space left on device" in msg
    assert "needs 1,000,000 bytes" in msg and "bytes free" in msg
    assert info.value.exit_code == 74 and info.value.failure_kind == "disk_full"
    assert names(tmp_path) == ["checkpoints.json", "last.ckpt"]
    assert (tmp_path / "last.ckpt").read_bytes() == before
    assert store.newest_intact() == (tmp_path / "last.ckpt", [])


def test_lightning_io_hook_writes_beside_the_target_never_in_the_temp_folder(tmp_path,
                                                                             monkeypatch):
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-temp-folder"))
    with pytest.raises(FileNotFoundError):  # the check bites: Lightning's own IO stages there
        TorchCheckpointIO().save_checkpoint(state(1), tmp_path / "stock.ckpt")
    io = InPlaceCheckpointIO(CheckpointStore(tmp_path / "run"))
    io.save_checkpoint(state(5), tmp_path / "run" / "last.ckpt")
    io.save_checkpoint(state(6), tmp_path / "elsewhere" / "x.ckpt")
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["global_step"] == 5
    assert torch.load(tmp_path / "elsewhere" / "x.ckpt", weights_only=False)["global_step"] == 6
    assert names(tmp_path / "elsewhere") == ["x.ckpt"]


def test_checkpoint_keeping_keys_leave_the_config_hash_alone():
    base = {"model": {"d_model": 64}, "trainer": {"lr": 1e-3}}
    kept = {**base, "trainer": {"lr": 1e-3, "keep_checkpoints": 5, "restart_if_corrupt": True}}
    assert config_hash(base) == config_hash(kept)
    assert checkpoint_bytes(1_000) == 12_000


def test_status_shows_disk_full():
    from leviathan.sweep.liveness import run_state

    def run(tags):
        return SimpleNamespace(info=SimpleNamespace(status="FAILED", start_time=0),
                               data=SimpleNamespace(tags=tags, params={}))

    assert run_state("failed", run({"failure_kind": "disk_full"})) == "disk full"
    assert run_state(None, run({"failure_kind": "disk_full"})) == "disk full"
    assert run_state("failed", run({})) == "failed"
    assert run_state("running", run({"failure_kind": "disk_full"})) == "running"  # requeued


def test_sweep_preflight_warns_when_scratch_cannot_hold_the_largest_runs_checkpoints(tmp_path):
    import shutil

    from leviathan.sweep.space import scratch_warning

    free = shutil.disk_usage(tmp_path).free

    def planned(name, params, **trainer):
        return SimpleNamespace(run=name, params_total=params, config={
            "trainer": {"keep_checkpoints": 2, **trainer},
            "paths": {"scratch_dir": str(tmp_path / "scratch")}})  # not created yet

    small = [planned("a", 1_000), planned("b", 2_000)]
    assert scratch_warning(SimpleNamespace(runs=small)) is None
    # the largest run: 12 bytes/param x (2 kept + 1 being written + 1 snapshot) > free
    params = free // 36 + 1
    plan = SimpleNamespace(runs=[*small, planned("big", params, snapshot_steps=[10])])
    msg = scratch_warning(plan)
    assert msg is not None and "the largest run, big" in msg
    assert str(tmp_path / "scratch") in msg and "keep_checkpoints=2" in msg
    assert "1 snapshots" in msg and "exit status 74" in msg
    assert scratch_warning(SimpleNamespace(runs=[planned("big", params // 2)])) is None


def test_a_sweep_job_stopped_by_a_full_disk_exits_74(monkeypatch):
    import leviathan.training.run as run
    from leviathan.sweep.job import run_job

    def full(cfg):
        raise CheckpointDiskFull("checkpoint last.ckpt: no space left on device in /scratch/x")

    monkeypatch.setattr(run, "train", full)
    with pytest.raises(SystemExit) as info:
        run_job({"seed": 0})
    assert info.value.code == 74
