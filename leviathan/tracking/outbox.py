"""A run's tracking state, beside its checkpoints: which MLflow run it is, and the queue of
operations the server has not confirmed yet (in memory, and journaled on disk).

    <run dir>/mlflow_run_id        the MLflow run id, once the server has answered
    <run dir>/mlflow_run.json      identity: run_uid (an idempotency key, also the run's `run_uid`
                                   tag), tracking uri, experiment, run name, tags, parent run
    <run dir>/mlflow_outbox.jsonl  one JSON operation per line (params, tags, metrics, artifact,
                                   status), appended before it is sent; emptied once all is sent
    <run dir>/.mlflow_outbox.lock  flock held by the one process that sends this outbox

Appends go to the OS at once (a killed process loses nothing); `sync()` makes them durable and
is called before each checkpoint, so every metric of a step a checkpoint covers survives a node
crash. A torn last line (a kill in mid-write) is skipped on reading. Locks use flock(2): on a
shared file system it needs flock support (NFSv4 has it; Lustre needs `-o flock`).

A full disk (ENOSPC, EDQUOT) never stops training: the operation is queued in memory and sent
as usual, one warning names the folder, and the whole queue is journaled again at the next
operation once there is room (until then a job that dies loses what was not sent yet).

The queue never holds a metric (key, step) twice: `claimed` records the pairs queued or already
on the server, so a step a resumed job recomputes is not queued again. `Outbox(None)` keeps the
queue in memory only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from leviathan.tracking.runs import IDENTITY, OUTBOX, RUN_ID, write_atomic

log = logging.getLogger(__name__)

# the run folder's file names (leviathan.tracking.runs owns them)
RUN_ID_FILE, IDENTITY_FILE, JOURNAL_FILE = RUN_ID, IDENTITY, OUTBOX
LOCK_FILE = ".mlflow_outbox.lock"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class Outbox:
    """The tracking files of one run folder (see the module docstring)."""

    def __init__(self, state_dir: str | Path | None) -> None:
        self.dir = Path(state_dir) if state_dir is not None else None
        self.journal = self.dir / JOURNAL_FILE if self.dir is not None else None
        self._fh = None  # append handle, while this process owns the outbox
        self._lock_fh = None
        self.ops: list[dict[str, Any]] = []  # the queue, oldest first
        self.claimed: dict[str, set[int]] = {}  # metric steps per key: queued or on the server
        self.pending_metrics = 0  # metric values in the queue
        self.mutex = threading.Lock()  # the queue, the claims and the journal
        self._sent_since_rewrite = 0
        self.journal_full = False  # the journal lacks operations the queue holds (no room)
        self._warned_full = False

    # ------------------------------------------------------------ the queue
    def _admit(self, op: dict[str, Any]) -> bool:
        """Queue `op` (mutex held); metrics whose (key, step) is claimed are dropped."""
        if op["op"] == "metrics":
            keep = [m for m in op["m"] if m[3] not in self.claimed.get(m[0], ())]
            if not keep:
                return False
            for m in keep:
                self.claimed.setdefault(m[0], set()).add(m[3])
            op = {"op": "metrics", "m": keep}
            self.pending_metrics += len(keep)
        self.ops.append(op)
        return True

    def put(self, op: dict[str, Any]) -> None:
        """Queue and journal one operation."""
        with self.mutex:
            if self._admit(op):
                self.append(self.ops[-1])

    def restore(self, drop_status: bool) -> int:
        """Queue what the journal holds (an earlier process's leftovers) and rewrite it to match;
        `drop_status`: a new attempt supersedes an earlier one's final status. Returns the count."""
        ops = self.load()
        with self.mutex:
            for op in ops:
                if not (drop_status and op.get("op") == "status"):
                    self._admit(op)
            self.rewrite(self.ops)
            return len(self.ops)

    def head(self, max_metrics: int) -> list[dict[str, Any]]:
        """The next operation to send; consecutive metrics merged up to `max_metrics` values."""
        with self.mutex:
            if not self.ops:
                return []
            group, n = [self.ops[0]], len(self.ops[0].get("m", ()))
            if group[0]["op"] == "metrics":
                for op in self.ops[1:]:
                    if op["op"] != "metrics" or n + len(op["m"]) > max_metrics:
                        break
                    group.append(op)
                    n += len(op["m"])
            return group

    def done(self, group: list[dict[str, Any]]) -> None:
        """`group` (from head) is on the server: unqueue it; empty the journal when the queue
        is, else compact it now and then."""
        with self.mutex:
            del self.ops[:len(group)]
            self.pending_metrics -= sum(len(op.get("m", ())) for op in group
                                        if op["op"] == "metrics")
            self._sent_since_rewrite += len(group)
            if not self.ops:
                self.clear()
            elif self._sent_since_rewrite > max(1000, len(self.ops)):
                self.rewrite(self.ops)

    def held(self, steps_by_key: dict[str, set[int]]) -> None:
        """The server holds these (key, step) pairs: claim them, unqueue queued copies."""
        with self.mutex:
            keep = []
            for op in self.ops:
                if op["op"] == "metrics":
                    vals = [m for m in op["m"] if m[3] not in steps_by_key.get(m[0], ())]
                    self.pending_metrics -= len(op["m"]) - len(vals)
                    if not vals:
                        continue
                    op = {"op": "metrics", "m": vals}
                keep.append(op)
            self.ops[:] = keep
            for key, steps in steps_by_key.items():
                self.claimed.setdefault(key, set()).update(steps)

    # ------------------------------------------------------------ identity and run id
    def identity(self) -> dict[str, Any] | None:
        path = self.dir / IDENTITY_FILE if self.dir is not None else None
        return json.loads(path.read_text()) if path and path.is_file() else None

    def write_identity(self, ident: dict[str, Any]) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / IDENTITY_FILE, json.dumps(ident, indent=1, sort_keys=True))

    def run_id(self) -> str | None:
        path = self.dir / RUN_ID_FILE if self.dir is not None else None
        rid = path.read_text().strip() if path and path.is_file() else ""
        return rid or None

    def write_run_id(self, run_id: str) -> None:
        if self.dir is not None and self.run_id() != run_id:
            write_atomic(self.dir / RUN_ID_FILE, run_id + "\n")

    # ------------------------------------------------------------ the journal
    def load(self) -> list[dict[str, Any]]:
        """The operations in the journal, oldest first (a torn or unreadable line is skipped)."""
        if self.journal is None or not self.journal.is_file():
            return []
        ops = []
        lines = self.journal.read_bytes().split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                ops.append(json.loads(line))
            except ValueError:
                where = "its last line (cut by a kill)" if i >= len(lines) - 2 else f"line {i + 1}"
                log.warning("%s: skipped %s: not JSON", self.journal, where)
        return ops

    def pending_count(self) -> int:
        """Lines in the journal (0 when absent): operations perhaps not on the server yet."""
        if self.journal is None or not self.journal.is_file():
            return 0
        with open(self.journal, "rb") as f:
            return sum(1 for line in f if line.strip())

    def rewrite(self, ops: list[dict[str, Any]]) -> None:
        """Replace the journal by `ops` (atomically) and keep appending after them."""
        self.close()
        self._sent_since_rewrite = 0
        if self.journal is None:
            return
        if not ops:
            self.journal.unlink(missing_ok=True)
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.journal.with_name(f".{self.journal.name}.tmp")
            try:
                with open(tmp, "w") as f:
                    f.writelines(json.dumps(op, separators=(",", ":")) + "\n" for op in ops)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.journal)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                if e.errno not in DISK_FULL:
                    raise
                self._full(e)
                return
        if self.journal_full:
            self.journal_full = False
            log.info(f"{self.journal}: journaled again ({len(ops)} operations): there is room "
                     "again")

    def append(self, op: dict[str, Any]) -> None:
        if self.journal is None:
            return
        if self.journal_full:  # a line may be torn: write the whole queue (op included) anew
            self.rewrite(self.ops)
            return
        try:
            if self._fh is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.journal, "a")  # noqa: SIM115 - kept open while we own it
            self._fh.write(json.dumps(op, separators=(",", ":")) + "\n")
            self._fh.flush()  # in the OS now: a killed process loses nothing
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            self._full(e)

    def sync(self) -> None:
        """Make every appended operation durable (fsync): called before a checkpoint."""
        with self.mutex:
            if self._fh is not None:
                try:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                except OSError as e:
                    if e.errno not in DISK_FULL:
                        raise
                    self._full(e)

    def _full(self, e: OSError) -> None:
        """No room for the journal: keep going from memory, say so once per episode."""
        self.journal_full = True
        self.close()
        if self._warned_full:
            return
        self._warned_full = True
        free = shutil.disk_usage(self.dir).free
        what = "quota exceeded" if e.errno == errno.EDQUOT else "no space left on device"
        log.warning(f"tracking outbox: {what} in {self.dir} ({free:,} bytes free): training "
                    f"goes on; its MLflow operations are kept in memory and sent as usual, and "
                    f"journaled again in {self.journal.name} once there is room (until then a "
                    "job that dies loses those not sent yet)")

    def clear(self) -> None:
        """Everything was sent: remove the journal."""
        self.close()
        self._sent_since_rewrite = 0
        if self.journal is not None:
            self.journal.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError as e:  # the buffered rest of a line that found no room
                if e.errno not in DISK_FULL:
                    raise

    # ------------------------------------------------------------ the sender's lock
    def lock(self, timeout_s: float = 0.0) -> bool:
        """Take the outbox's lock (waiting up to `timeout_s`); False when another process holds
        it (a job still sending, or a concurrent `--sync`)."""
        if self._lock_fh is not None or self.dir is None:
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.dir / LOCK_FILE, "a")  # noqa: SIM115 - held until unlock()
        end = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fh = fh
                return True
            except BlockingIOError:
                if time.monotonic() >= end:
                    fh.close()
                    return False
                time.sleep(0.2)

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None
