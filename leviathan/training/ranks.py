"""What the ranks of one multi-rank run agree on before and after Lightning's process group.

Before `trainer.fit` there is no process group yet (Lightning starts it), so two things go
through the run folder, keyed by the attempt (every rank of one start of the run computes the
same key: the SLURM job and its restart count, torchrun's run id and restart count, or the key
rank 0 puts in the environment before Lightning starts the other ranks of a single node):

- the checkpoint to resume from: rank 0 verifies the candidates (a sha256 over each file it
  reads) and writes its verdict; the other ranks wait for it instead of hashing every checkpoint
  themselves (issue 34.11), and raise rank 0's error if it found none intact;
- why the run failed: every rank that fails writes its error and the time; rank 0 records the
  earliest in MLflow, so a peer's "Connection closed by peer" never hides the cause.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path

from leviathan.errors import LeviathanError
from leviathan.tracking.runs import RunFolder, write_atomic

log = logging.getLogger(__name__)

ATTEMPT_ENV = "LEVIATHAN_ATTEMPT"  # set by rank 0 for the ranks Lightning starts on its node
VERDICT_WAIT_S = 1800.0  # how long a rank waits for rank 0 to verify the checkpoints
PEER_WAIT_S = 3.0  # how long rank 0 waits for the other ranks' failure reports


class VerdictError(LeviathanError, RuntimeError):
    """Rank 0 found no checkpoint to start from (its own error says why, e.g. every checkpoint
    corrupt); raised on the other ranks with its message."""


def attempt_key(is_zero: bool) -> str | None:
    """The same string on every rank of this start of the run (None: cannot tell; each rank
    then decides alone). On rank 0 outside SLURM/torchrun it is new and put in the
    environment, which Lightning hands to the ranks it starts."""
    env = os.environ
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID"):
        return f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_RESTART_COUNT', '0')}"
    if env.get("TORCHELASTIC_RUN_ID"):
        return f"elastic-{env['TORCHELASTIC_RUN_ID']}-{env.get('TORCHELASTIC_RESTART_COUNT', 0)}"
    if is_zero:
        env[ATTEMPT_ENV] = uuid.uuid4().hex
    return env.get(ATTEMPT_ENV)


def publish_verdict(folder: RunFolder, attempt: str, ckpt: str | None,
                    error: str | None = None) -> None:
    """Rank 0: the checkpoint every rank starts from (None: a fresh start), or why none."""
    write_atomic(folder.resume_verdict, json.dumps({"attempt": attempt, "checkpoint": ckpt,
                                                    "error": error}))


def await_verdict(folder: RunFolder, attempt: str, timeout: float = VERDICT_WAIT_S,
                  poll: float = 0.2) -> str | None:
    """A rank other than 0: rank 0's verdict for this attempt (the checkpoint, or None)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            verdict = json.loads(folder.resume_verdict.read_text())
        except (OSError, ValueError):
            verdict = None
        if verdict and verdict.get("attempt") == attempt:
            if verdict.get("error"):
                raise VerdictError(f"rank 0: {verdict['error']}")
            return verdict.get("checkpoint")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder.resume_verdict}: no verdict from rank 0 on the "
                               f"checkpoint to resume from after {timeout:.0f} s")
        time.sleep(poll)


def report_failure(folder: RunFolder, attempt: str | None, rank: int, error: str) -> None:
    """Any rank that fails: its error and when, for rank 0 to find (best effort)."""
    try:
        folder.rank_failures.mkdir(exist_ok=True)
        write_atomic(folder.rank_failures / f"rank{rank}.json",
                     json.dumps({"attempt": attempt, "rank": rank, "time": time.time(),
                                 "error": error}))
    except OSError as e:  # the reason is a courtesy: never hide the failure itself
        log.warning(f"could not record rank {rank}'s failure in {folder.rank_failures}: {e}")


def first_failure(folder: RunFolder, attempt: str | None, rank: int, error: str,
                  world_size: int, wait_s: float = PEER_WAIT_S) -> str:
    """Rank 0: the earliest failure of this attempt among the ranks ('rank r: <error>'),
    waiting up to `wait_s` for the other ranks' reports; its own `error` if it was first."""
    mine = {"rank": rank, "time": time.time(), "error": error}
    reports = [mine]
    deadline = time.monotonic() + (wait_s if world_size > 1 and attempt else 0.0)
    while True:
        reports = [mine, *_reports(folder.rank_failures, attempt, rank)]
        if len(reports) >= world_size or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    first = min(reports, key=lambda r: r["time"])
    return error if world_size == 1 else f"rank {first['rank']}: {first['error']}"


def _reports(folder: Path, attempt: str | None, own_rank: int) -> list[dict]:
    out = []
    for path in folder.glob("rank*.json") if folder.is_dir() else ():
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("attempt") == attempt and rec.get("rank") != own_rank:
            out.append(rec)
    return out
