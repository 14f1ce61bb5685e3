"""The outbox and the writer without a server: nothing blocks, nothing is queued twice, a kill
mid-write costs one torn line, one process sends at a time; and how a run's state is read."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from leviathan.sweep.liveness import LOST_AFTER_BEATS, run_state
from leviathan.tracking.outbox import IDENTITY_FILE, JOURNAL_FILE, Outbox
from leviathan.tracking.run_tracker import OutboxBusy, RunTracker
from leviathan.tracking.server import free_port


def test_journal_survives_a_torn_last_line_and_is_rewritten_or_cleared(tmp_path):
    ob = Outbox(tmp_path)
    ob.append({"op": "metrics", "m": [["loss", 1.0, 1, 1]]})
    ob.append({"op": "tags", "t": {"a": "b"}})
    ob.sync()
    ob.close()
    with open(tmp_path / JOURNAL_FILE, "a") as f:
        f.write('{"op": "metrics", "m": [["loss", 0.5')  # a kill in mid-write
    assert [op["op"] for op in Outbox(tmp_path).load()] == ["metrics", "tags"]
    assert ob.pending_count() == 3  # lines on disk, the torn one included
    ob.rewrite([{"op": "status", "s": "FINISHED"}])
    assert Outbox(tmp_path).load() == [{"op": "status", "s": "FINISHED"}]
    ob.clear()
    assert not (tmp_path / JOURNAL_FILE).exists() and ob.pending_count() == 0


def test_one_sender_at_a_time(tmp_path):
    a, b = Outbox(tmp_path), Outbox(tmp_path)
    assert a.lock() and not b.lock(timeout_s=0.3)
    a.unlock()
    assert b.lock()
    b.unlock()


def test_writer_never_blocks_and_keeps_everything_for_later(tmp_path):
    """No server answers: log_* return at once, a (key, step) is queued once, and closing leaves
    the identity and every operation (final status included) in the run folder."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    tr = RunTracker(uri, "exp", state_dir=tmp_path, retry_backoff_s=0.05,
                    retry_max_backoff_s=0.1, final_flush_timeout_s=0.3, start_timeout_s=60)
    assert tr.start(run_name="r1", tags={"kind": "train"}, params={"lr": 0.1}) is None
    t0 = time.monotonic()
    for step in range(1, 201):
        tr.log_metrics({"loss": 1.0 / step, "nan": float("nan")}, step=step)
    tr.log_metrics({"loss": 99.0}, step=7)  # a recomputed step: dropped
    assert time.monotonic() - t0 < 5 and tr.pending == 200
    assert "not answering" in tr.describe() and str(tmp_path) in tr.describe()
    assert not tr.finish("FINISHED")
    ident = json.loads((tmp_path / IDENTITY_FILE).read_text())
    assert ident["run_name"] == "r1" and ident["uri"] == uri and len(ident["run_uid"]) == 32
    ops = Outbox(tmp_path).load()
    assert [op["op"] for op in ops][:1] == ["params"] and ops[-1] == {"op": "status",
                                                                        "s": "FINISHED"}
    steps = [m[3] for op in ops if op["op"] == "metrics" for m in op["m"]]
    assert steps == list(range(1, 201))  # once each, no NaN, no second step 7
    assert not (tmp_path / "mlflow_run_id").exists()

    # the next attempt replays them (its own final status supersedes the old one) and keeps
    # the run's identity; a sync meanwhile would find the outbox busy
    tr2 = RunTracker(uri, "exp", state_dir=tmp_path, retry_backoff_s=0.05,
                     retry_max_backoff_s=0.1, final_flush_timeout_s=0.3)
    tr2.start()
    assert tr2.pending == 200
    with pytest.raises(OutboxBusy):
        RunTracker(uri, "exp", state_dir=tmp_path).replay()
    tr2.log_metrics({"loss": 0.0}, step=201)
    assert not tr2.finish("KILLED")
    ops = Outbox(tmp_path).load()
    assert [op for op in ops if op["op"] == "status"] == [{"op": "status", "s": "KILLED"}]
    assert json.loads((tmp_path / IDENTITY_FILE).read_text())["run_uid"] == ident["run_uid"]


def _run(status: str, age_s: float | None, every_s: float = 60.0):
    now = time.time()
    tags = {} if age_s is None else {"heartbeat": str(now - age_s)}
    return SimpleNamespace(info=SimpleNamespace(status=status, start_time=(now - 3600) * 1000),
                           data=SimpleNamespace(tags=tags,
                                                params={"tracking.heartbeat_every_s": every_s}))


def test_run_state_reads_launcher_and_mlflow_together():
    fresh, stale = _run("RUNNING", 5), _run("RUNNING", LOST_AFTER_BEATS * 60 + 5)
    assert run_state("running", stale) == "running"  # the launcher vouches for the job
    assert run_state("failed", fresh) == "lost"  # the job died without closing its run
    assert run_state("unknown", stale) == "lost" and run_state(None, stale) == "lost"
    assert run_state("unknown", fresh) == "running"
    assert run_state(None, _run("RUNNING", None)) == "lost"  # never beat, started an hour ago
    assert run_state("unknown", _run("RUNNING", 30, every_s=1)) == "lost"  # its own cadence
    assert run_state("finished", fresh) == "unsynced"  # final status still in the outbox
    assert run_state("unknown", _run("FAILED", None)) == "failed"
    assert run_state("finished", _run("FINISHED", None)) == "finished"
    assert run_state("queued", None) == "queued" and run_state(None, None) is None


def test_start_timeout_zero_is_allowed_and_negative_names_the_key():
    from leviathan.tracking.config import tracking_config
    from leviathan.training.config import TrainConfigError

    assert tracking_config({"start_timeout_s": 0}).start_timeout_s == 0
    with pytest.raises(TrainConfigError, match=r"tracking\.start_timeout_s"):
        tracking_config({"start_timeout_s": -1})
    with pytest.raises(TrainConfigError, match=r"tracking\.heartbeat_every_s"):
        tracking_config({"heartbeat_every_s": 0})


def test_final_send_is_spread_unless_killed(tmp_path, monkeypatch):
    """The jobs of an array that end together would all send their last batch at one instant
    (bench tracking: that burst set the p99 flush); finish() first waits a random
    0..final_flush_spread_s, except for KILLED (a preempted job's grace period is short)."""
    import leviathan.tracking.run_tracker as rt
    from leviathan.tracking.config import tracking_config
    from leviathan.training.config import TrainConfigError

    drawn = []

    def uniform(a, b):  # the longest draw, recorded
        drawn.append((a, b))
        return b

    monkeypatch.setattr(rt.random, "uniform", uniform)
    for k in (*rt.HTTP_ENV, "MLFLOW_DISABLE_TELEMETRY"):  # trackers left open set these
        monkeypatch.delenv(k, raising=False)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens
    kw = {"retry_backoff_s": 0.05, "retry_max_backoff_s": 0.05, "final_flush_timeout_s": 0.05}
    assert RunTracker(uri, "e", flush_every_s=5.0).final_flush_spread_s == 2.0  # 0.4 x 5 s
    assert RunTracker(uri, "e", flush_every_s=3600).final_flush_spread_s == rt.MAX_DEFAULT_SPREAD_S
    for status, spread, waits in [("FINISHED", 0.8, True), ("FAILED", 0.8, True),
                                  ("KILLED", 0.8, False), ("FINISHED", 0.0, False)]:
        drawn.clear()
        tr = RunTracker(uri, "e", state_dir=tmp_path / f"{status}{spread}",
                        final_flush_spread_s=spread, **kw)
        tr.start(run_name="r")
        t0 = time.monotonic()
        assert not tr.finish(status)
        took = time.monotonic() - t0
        assert drawn == ([(0.0, spread)] if waits else []), status  # no draw: no wait
        assert took >= spread or not waits, (status, took)
        ops = Outbox(tmp_path / f"{status}{spread}").load()
        assert ops[-1] == {"op": "status", "s": status}  # the status still goes, after the wait

    trk = tracking_config({"final_flush_spread_s": 0.25})
    assert RunTracker.from_config(trk, tmp_path / "cfg").final_flush_spread_s == 0.25
    assert tracking_config({}).final_flush_spread_s is None
    with pytest.raises(TrainConfigError, match=r"tracking\.final_flush_spread_s"):
        tracking_config({"final_flush_spread_s": -1})


def test_a_full_disk_keeps_the_queue_in_memory_and_journals_it_again_later(tmp_path, caplog):
    """ENOSPC while journaling (a real 1 MB tmpfs, filled): no traceback, one warning naming
    the folder, every operation still queued to send, what was journaled before kept; once
    there is room the whole queue is journaled again (issue 34.11)."""
    import logging
    import shutil
    import subprocess

    folder = tmp_path / "full"
    folder.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        ob = Outbox(folder)
        ob.put({"op": "tags", "t": {"before": "full"}})
        with open(folder / "filler", "wb") as f:  # leave no room at all
            while shutil.disk_usage(folder).free > 0:
                try:
                    f.write(b"\0" * 4096)
                    f.flush()
                except OSError:
                    break
        with caplog.at_level(logging.WARNING, logger="leviathan.tracking.outbox"):
            for step in range(1, 2001):  # far more than a filesystem block
                ob.put({"op": "metrics", "m": [["loss", 1.0 / step, 0, step]]})
            ob.sync()
        full = [r.getMessage() for r in caplog.records if "no space left" in r.getMessage()]
        assert len(full) == 1 and str(folder) in full[0] and "training goes on" in full[0]
        assert ob.journal_full and len(ob.ops) == 2001 and ob.pending_metrics == 2000
        assert Outbox(folder).load()[0] == {"op": "tags", "t": {"before": "full"}}
        (folder / "filler").unlink()  # room again: the next operation journals the whole queue
        ob.put({"op": "tags", "t": {"after": "room"}})
        assert not ob.journal_full and Outbox(folder).load() == ob.ops and len(ob.ops) == 2002
        ob.close()
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
