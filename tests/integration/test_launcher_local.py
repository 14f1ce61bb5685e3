"""launcher=local: real submitit LocalExecutor processes, bounded parallelism, signals, states."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from leviathan.sweep.launcher import (
    ResumableCall,
    cancel,
    job_state,
    load_job,
    make_executor,
    submit_array,
    wait,
)
from leviathan.sweep.selfcheck import count_steps

# The job processes cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def stamp(path: str, seconds: float, value: int, gate: str | None = None, peers: int = 0) -> int:
    """Sleep, recording when this job ran. With `gate` (a folder): first announce the start
    there, then wait until `peers` jobs have started and the file <gate>/go exists."""
    start = time.time()
    if gate is not None:
        Path(gate, f"started-{value}").touch()
        deadline = time.monotonic() + 120
        while not (len(list(Path(gate).glob("started-*"))) >= peers and Path(gate, "go").exists()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {value}: peers or the go file never came")
            time.sleep(0.02)
    time.sleep(seconds)
    Path(path).write_text(json.dumps([start, time.time()]))
    return value * value


def boom(message: str) -> None:
    raise ValueError(message)


def _executor(tmp_path, **over):
    cfg = {"name": "local", "max_parallel": 1, "timeout_min": 5.0, "signal_delay_s": 30,
           "poll_s": 0.2, "folder": str(tmp_path / "submitit")}
    return make_executor({**cfg, **over})


@pytest.mark.slow
def test_local_array_runs_with_bounded_parallelism(tmp_path):
    """Two slots, four jobs: every job waits until two have started and the test says go, so
    the first two overlap by construction and none can finish before the queue is checked."""
    ex = _executor(tmp_path, max_parallel=2)
    gate = tmp_path / "gate"
    gate.mkdir()
    fns = [ResumableCall(stamp, str(tmp_path / f"t{i}.json"), 0.2, i, str(gate), 2)
           for i in range(4)]
    jobs = submit_array(ex, fns)
    assert [job_state(j) for j in jobs] == ["running", "running", "queued", "queued"]
    (gate / "go").touch()
    seen: list[tuple[int, str]] = []
    states = wait(jobs, poll_s=0.1, on_change=lambda i, s: seen.append((i, s)))
    assert states == ["finished"] * 4
    assert [j.result() for j in jobs] == [0, 1, 4, 9]
    spans = [json.loads((tmp_path / f"t{i}.json").read_text()) for i in range(4)]
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans],
                    key=lambda e: (e[0], e[1]))
    running, most = 0, 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    assert most == 2, f"expected 2 jobs at once at most and at least once, got {most}: {spans}"
    assert (2, "queued") in seen  # the third waited for a slot ...
    assert spans[2][0] >= min(spans[0][1], spans[1][1])  # ... and started once one had ended


def test_local_failed_job_is_failed(tmp_path):
    from submitit.core.utils import FailedJobError

    jobs = submit_array(_executor(tmp_path), [ResumableCall(boom, "bad config")])
    assert wait(jobs, poll_s=0.1) == ["failed"]
    with pytest.raises(FailedJobError, match="bad config"):
        jobs[0].result()


@pytest.mark.slow
def test_local_signal_checkpoints_requeues_and_resumes(tmp_path):
    """USR2 (what the job gets before its time limit): submitit calls checkpoint(), the job is
    rerun with the same arguments, and count_steps continues from its saved count."""
    state = tmp_path / "count.json"
    jobs = submit_array(_executor(tmp_path),  # the first attempt holds at 10 until signalled
                        [ResumableCall(count_steps, 30, str(state), 0.02, hold_at=10)])
    deadline = time.time() + 120
    while not (state.exists() and json.loads(state.read_text())["count"] >= 10):
        assert time.time() < deadline, "the job never started counting"
        time.sleep(0.05)
    controller = jobs[0].job._process.pid  # submitit's local controller; the job is its child
    children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGUSR2)  # what the controller sends before a time limit
    assert wait(jobs, poll_s=0.1) == ["finished"]
    out = jobs[0].result()
    assert out["count"] == 30
    assert out["starts"] == [0, 10], out


@pytest.mark.parametrize("driver_sigint", ["default", "ignored"])
def test_cancel_stops_running_and_queued_jobs(tmp_path, driver_sigint):
    """`ignored`: a driver started with `nohup ... &` ignores SIGINT, and its children would
    inherit that across exec; cancel (SIGINT to submitit's controller) must still stop them."""
    ex = _executor(tmp_path, max_parallel=1)
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN if driver_sigint == "ignored"
                  else signal.default_int_handler)
    try:
        jobs = submit_array(ex, [ResumableCall(stamp, str(tmp_path / f"c{i}.json"), 60.0, i)
                                 for i in range(2)])
    finally:
        signal.signal(signal.SIGINT, before)
    assert [job_state(j) for j in jobs] == ["running", "queued"]
    process = jobs[0].job._process
    cancel(jobs)
    try:  # the event itself, bounded: a crowded machine can take long to start the controller
        process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("the cancelled job's controller still runs 180 s after SIGINT")
    assert [job_state(j) for j in jobs] == ["failed", "failed"]
    assert jobs[1].job is None  # never started
    assert not (tmp_path / "c0.json").exists()


def test_load_job_from_another_process_reads_state(tmp_path):
    ex = _executor(tmp_path)
    jobs = submit_array(ex, [ResumableCall(stamp, str(tmp_path / "l.json"), 0.0, 3)])
    assert wait(jobs, poll_s=0.1) == ["finished"]
    again = load_job("local", ex.folder, jobs[0].job_id)  # e.g. from a manifest
    assert job_state(again) == "finished" and again.result() == 9
    assert job_state(load_job("local", ex.folder, "999999999")) == "failed"  # no such process
