"""A run's checkpoint files: written once in place, kept `trainer.keep_checkpoints` deep with a
checksum each, verified before a resume.

Writing. Lightning's own TorchCheckpointIO serializes the whole checkpoint into memory and then
writes it through an fsspec transaction: a temporary file in the system temp folder, moved (a
copy, across filesystems) to the target. `InPlaceCheckpointIO` keeps Lightning's hook (the
strategy's checkpoint_io: the content and the restore stay Lightning's) but `torch.save`s
straight into a temporary name beside the target, hashing (sha256) as it writes, fsyncs and
renames: each checkpoint is written once, on the run folder's filesystem, never held whole in
memory.

Keeping. <run dir>/last.ckpt is the newest; before a new one replaces it, the previous one gets
a second name, prev_<step>.ckpt (a hard link: no copy), and the oldest beyond
`keep_checkpoints` are removed once the new one is in place. checkpoints.json records the size,
sha256 and step of every checkpoint file here; it accepts both the old and the new content of
last.ckpt while the rename is in flight, so a kill at any moment leaves every file verifiable.
WSD-S snapshots (step_<step>.ckpt) are other names of a written checkpoint and never rotate.

Resuming. `CheckpointStore.newest_intact` checks last.ckpt, then the kept ones, newest first:
a file whose size or sha256 differs from its record (or, without a record, that torch cannot
load) is moved aside to <name>.corrupt with a warning naming it. A full disk while
checkpointing raises `CheckpointDiskFull` (exit status 74) after removing its temporary file;
the previous checkpoint stays.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from leviathan.errors import LeviathanError
from leviathan.tracking.runs import CKPT, CORRUPT, RunFolder

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_EXIT = 74  # exit status of a job stopped by a full disk (sysexits' EX_IOERR)
HASH_CHUNK = 64 << 20  # bytes read at a time when verifying


class CheckpointDiskFull(LeviathanError, OSError):
    """No space (or quota) left for a checkpoint; the message names the folder, the bytes the
    checkpoint needs and the bytes free."""

    exit_code = DISK_FULL_EXIT
    failure_kind = "disk_full"


class NoIntactCheckpoint(LeviathanError, RuntimeError):
    """Every checkpoint of the run failed its check (trainer.restart_if_corrupt starts afresh)."""


def state_bytes(obj: Any) -> int:
    """Bytes of the tensors in a checkpoint dict (each storage counted once)."""
    seen: dict[int, int] = {}

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            s = o.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(obj)
    return sum(seen.values())


def _mb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


class _HashingFile:
    """A binary file that hashes what is written through it (torch.save's writer)."""

    def __init__(self, f) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0
        self.error: OSError | None = None  # torch's C++ writer swallows it: kept for write_tmp

    def write(self, b) -> int:
        try:
            n = self.f.write(b)
        except OSError as e:
            self.error = self.error or e
            raise
        self.sha.update(b)
        self.size += n
        return n

    def flush(self) -> None:
        self.f.flush()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_tmp(obj: Any, path: Path) -> dict:
    """torch.save `obj` to the temporary name beside `path` (fsynced); returns its record
    {bytes, sha256}. On any failure the temporary file is removed; a full disk raises
    CheckpointDiskFull."""
    tmp = _tmp(path)
    out = None
    try:
        with open(tmp, "wb") as raw:
            out = _HashingFile(raw)
            torch.save(obj, out)
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e if isinstance(e, OSError) else (out.error if out is not None else None)
        if cause is not None and cause.errno in DISK_FULL_ERRNOS:
            raise disk_full(path, state_bytes(obj), cause) from e
        if cause is not None:
            raise cause from e  # the write's own error, not torch's "unexpected pos"
        raise
    return {"bytes": out.size, "sha256": out.sha.hexdigest()}


def disk_full(path: Path, needed: int, e: OSError) -> CheckpointDiskFull:
    folder = path.parent
    free = shutil.disk_usage(folder).free
    what = "quota exceeded" if e.errno == errno.EDQUOT else "no space left on device"
    return CheckpointDiskFull(
        f"checkpoint {path.name}: {what} in {folder}: needs {needed:,} bytes "
        f"({_mb(needed)}), {free:,} bytes free ({_mb(free)}); the temporary file was removed and "
        "the previous checkpoint is kept: free space and start the same command again")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class CheckpointStore:
    """The checkpoint files of one run folder (see the module docstring)."""

    def __init__(self, run_dir: Path, keep: int = 2, world_size: int | None = None) -> None:
        self.folder = RunFolder(Path(run_dir))
        self.keep = int(keep)
        self.last = self.folder.checkpoint
        self.world_size = world_size  # recorded with each checkpoint written (its ranks' states)

    # ------------------------------------------------------------ the manifest
    def records(self) -> dict[str, list[dict]]:
        """{file name: [accepted records {bytes, sha256, step}]} (empty when unreadable)."""
        path = self.folder.checkpoint_manifest
        try:
            data = json.loads(path.read_text())
            return {k: list(v) for k, v in data["files"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def _write_records(self, recs: dict[str, list[dict]]) -> None:
        path = self.folder.checkpoint_manifest
        tmp = _tmp(path)
        try:
            with open(tmp, "w") as f:
                json.dump({"files": recs}, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------ writing
    def save(self, checkpoint: dict, step: int) -> dict:
        """Write `checkpoint` as last.ckpt, keep the previous one as prev_<step>.ckpt, drop the
        oldest beyond `keep`. Returns the new file's record."""
        rec = {**write_tmp(checkpoint, self.last), "step": int(step)}
        if self.world_size is not None:
            rec["world_size"] = int(self.world_size)
        tmp = _tmp(self.last)
        try:
            recs = self.records()
            old = recs.get(CKPT, [])
            kept = self._keep_previous(old, recs)
            recs[CKPT] = [rec, *old[:1]]  # last.ckpt is either until the rename lands
            self._write_records(recs)
            os.replace(tmp, self.last)
            _fsync_dir(self.last.parent)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
                raise disk_full(self.last, rec["bytes"], e) from e
            raise
        self._prune(rec, kept)
        return rec

    def _keep_previous(self, old: list[dict], recs: dict[str, list[dict]]) -> Path | None:
        """Give the current last.ckpt its prev_<step>.ckpt name (when it is the one recorded)."""
        if self.keep < 2 or not old or not self.last.is_file():
            return None
        if self.last.stat().st_size != old[0]["bytes"]:
            return None  # not the recorded one (an unrecorded file): nothing to keep
        prev = self.folder.previous(old[0]["step"])
        prev.unlink(missing_ok=True)
        try:
            os.link(self.last, prev)
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                raise
            shutil.copyfile(self.last, prev)  # no hard links here
        recs[prev.name] = [old[0]]
        return prev

    def _prune(self, rec: dict, kept: Path | None) -> None:
        """Remove the kept checkpoints beyond `keep`, and the records of files gone."""
        prevs = self.folder.previous_checkpoints()
        for p in prevs[max(0, self.keep - 1):]:
            p.unlink(missing_ok=True)
        recs = self.records()
        recs[CKPT] = [rec]
        self._write_records({k: v for k, v in recs.items() if (self.folder.path / k).exists()})

    def keep_snapshot(self, step: int) -> Path:
        """Keep the checkpoint just written as step_<step>.ckpt (a hard link where possible)."""
        dst = self.folder.snapshot(step)
        tmp = _tmp(dst)
        tmp.unlink(missing_ok=True)
        try:
            try:
                os.link(self.last, tmp)
            except OSError as e:
                if e.errno in DISK_FULL_ERRNOS:
                    raise
                shutil.copyfile(self.last, tmp)
            recs = self.records()
            recs[dst.name] = [r for r in recs.get(CKPT, [])[:1]]
            os.replace(tmp, dst)
            self._write_records(recs)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in DISK_FULL_ERRNOS:
                raise disk_full(dst, self.last.stat().st_size, e) from e
            raise
        return dst

    # ------------------------------------------------------------ resuming
    def candidates(self) -> list[Path]:
        """last.ckpt and the kept ones, newest first (only those that exist)."""
        return [p for p in (self.last, *self.folder.previous_checkpoints()) if p.is_file()]

    def check(self, path: Path, recs: dict[str, list[dict]] | None = None) -> str | None:
        """Why `path` cannot be resumed from (None: intact). Recorded: its size and sha256 must
        match a record; unrecorded (an older version's file): torch must load it."""
        recs = self.records() if recs is None else recs
        accepted = recs.get(path.name)
        if accepted:
            size = path.stat().st_size
            if all(r["bytes"] != size for r in accepted):
                return (f"{size:,} bytes, recorded "
                        f"{' or '.join(format(r['bytes'], ',') for r in accepted)}")
            digest = sha256_of(path)
            if all(r["sha256"] != digest for r in accepted):
                return f"sha256 {digest[:12]}... differs from the recorded one"
            return None
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception as e:  # noqa: BLE001 - any failure to load is the verdict
            return f"does not load ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            return "not a Lightning checkpoint (no state_dict)"
        return None

    def newest_intact(self, move_aside: bool = True,
                      warn: Callable[[str], None] | None = None) -> tuple[Path | None, list[str]]:
        """(the newest checkpoint that passes `check`, or None; one line per one that failed).
        Failed files are moved aside to <name>.corrupt when `move_aside` (rank 0 only)."""
        warn = warn or log.warning
        recs = self.records()
        failed = []
        if move_aside:  # what a killed writer left: it only takes space
            for stale in self.folder.path.glob(".*.ckpt.tmp"):
                stale.unlink(missing_ok=True)
        for path in self.candidates():
            try:
                why = self.check(path, recs)
            except FileNotFoundError:  # moved aside by rank 0 meanwhile
                why = "moved aside by rank 0"
            if why is None:
                return path, failed
            line = f"checkpoint {path} is corrupt ({why})"
            if move_aside:
                aside = path.with_name(path.name + CORRUPT)
                os.replace(path, aside)
                line += f": moved aside to {aside.name}"
            warn(line)
            failed.append(line)
        return None, failed

    def step_of(self, path: Path) -> int | None:
        """The step recorded for a checkpoint file, if any."""
        recs = self.records().get(path.name) or []
        return recs[0]["step"] if recs else None

    def world_size_of(self, path: Path) -> int | None:
        """How many ranks wrote their data position into a checkpoint file (None: unrecorded,
        a checkpoint of an older version)."""
        recs = self.records().get(path.name) or []
        return recs[0].get("world_size") if recs else None


class InPlaceCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, writing in place: last.ckpt of `store`'s run folder through
    the store (checksum, rotation); any other path as a temporary file beside it, renamed."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.resolve() == self.store.last.resolve():
            self.store.save(checkpoint, int(checkpoint.get("global_step", 0)))
            return
        write_tmp(checkpoint, path)
        os.replace(_tmp(path), path)
        _fsync_dir(path.parent)
