"""What the ranks of one run agree on through the run folder (leviathan.training.ranks): rank
0's verdict on the checkpoint to start from, and the first failing rank's own error."""

from __future__ import annotations

import threading
import time

import pytest

from leviathan.tracking.runs import RunFolder
from leviathan.training.ranks import (
    ATTEMPT_ENV,
    VerdictError,
    attempt_key,
    await_verdict,
    first_failure,
    publish_verdict,
    report_failure,
)


def test_the_attempt_key_is_shared_by_the_ranks_of_one_start(monkeypatch):
    for var in ("SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID",
                ATTEMPT_ENV):
        monkeypatch.delenv(var, raising=False)
    assert attempt_key(is_zero=False) is None  # nothing to agree on: each rank decides alone
    zero = attempt_key(is_zero=True)  # rank 0 of one node: a new key its children inherit
    assert zero and attempt_key(is_zero=False) == zero and attempt_key(is_zero=True) != zero
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    assert attempt_key(is_zero=True) == attempt_key(is_zero=False) == "slurm-41-0"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued: another attempt
    assert attempt_key(is_zero=False) == "slurm-41-1"


def test_a_rank_waits_for_rank_zeros_verdict_of_its_own_attempt(tmp_path):
    folder = RunFolder(tmp_path)
    publish_verdict(folder, "old", "/stale/last.ckpt")  # an earlier start's verdict: ignored
    later = threading.Timer(0.3, publish_verdict, (folder, "now", str(tmp_path / "last.ckpt")))
    later.start()
    t0 = time.monotonic()
    assert await_verdict(folder, "now", timeout=10, poll=0.05) == str(tmp_path / "last.ckpt")
    assert time.monotonic() - t0 >= 0.25
    publish_verdict(folder, "fresh", None)
    assert await_verdict(folder, "fresh", timeout=1) is None  # a fresh start
    publish_verdict(folder, "bad", None, error="NoIntactCheckpoint: every checkpoint is corrupt")
    with pytest.raises(VerdictError, match="rank 0: NoIntactCheckpoint"):
        await_verdict(folder, "bad", timeout=1)
    with pytest.raises(TimeoutError, match="no verdict from rank 0"):
        await_verdict(folder, "never", timeout=0.2, poll=0.05)


def test_rank_zero_records_the_first_failing_ranks_error(tmp_path):
    folder = RunFolder(tmp_path)
    report_failure(folder, "a1", 1, "DataError: data state was saved with other settings")
    report_failure(folder, "a0", 2, "ValueError: another attempt")  # not this attempt
    time.sleep(0.01)
    echo = "RuntimeError: Connection closed by peer"
    assert first_failure(folder, "a1", 0, echo, world_size=3, wait_s=0.2) == \
        "rank 1: DataError: data state was saved with other settings"
    # rank 0 first: its own error, after waiting a moment for the others
    assert first_failure(folder, "a9", 0, "OSError: disk", world_size=2, wait_s=0.1) == \
        "rank 0: OSError: disk"
    assert first_failure(folder, None, 0, "OSError: disk", world_size=1) == "OSError: disk"
