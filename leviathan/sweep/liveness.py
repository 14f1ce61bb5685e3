"""A run's state from two witnesses: the launcher's job state and the MLflow run (status and
`heartbeat` tag, which a live job's writer sets every tracking.heartbeat_every_s).

A job that dies without closing its run (node crash, kill -9, the OOM killer) leaves its MLflow
run RUNNING forever. Such a run is `lost` when the launcher does not show its job queued or
running and either saw it fail, or cannot tell (a SLURM job squeue has forgotten, no record) and
the heartbeat is older than LOST_AFTER_BEATS beats. The sweep's relaunch resubmits a lost run;
it resumes from its checkpoint into the same MLflow run. `unsynced`: the job finished but its
final MLflow writes wait in its outbox (`python -m leviathan.sweep.status <sweep> --sync`).
`disk full`: the job stopped because a checkpoint found no space in the scratch folder (its
MLflow run FAILED with failure_kind=disk_full); free space and launch the sweep again.
"""

from __future__ import annotations

import time
from typing import Any

LOST_AFTER_BEATS = 5  # missed heartbeats before a RUNNING run nobody vouches for is lost
DEFAULT_HEARTBEAT_S = 60.0  # tracking.heartbeat_every_s when the run does not record it
DISK_FULL = "disk_full"  # failure_kind of CheckpointDiskFull (leviathan.training.checkpoints)
MLFLOW_STATES = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "failed",
                 "RUNNING": "running", "SCHEDULED": "queued"}


def heartbeat_age_s(run: Any, now: float | None = None) -> float:
    """Seconds since the run's last heartbeat (since its start when it never sent one)."""
    from leviathan.tracking.runs import Tag

    beat = run.data.tags.get(Tag.HEARTBEAT)
    t = float(beat) if beat else run.info.start_time / 1000.0
    return (time.time() if now is None else now) - t


def is_stale(run: Any, now: float | None = None) -> bool:
    """True when the run missed LOST_AFTER_BEATS of its own heartbeats."""
    every = float(run.data.params.get("tracking.heartbeat_every_s", DEFAULT_HEARTBEAT_S))
    return heartbeat_age_s(run, now) > LOST_AFTER_BEATS * every


def run_state(launcher: str | None, run: Any | None, now: float | None = None) -> str | None:
    """queued | running | finished | failed | disk full | lost | unsynced | unknown, or None (no
    record anywhere). `launcher`: the job's state (leviathan.sweep.launcher.job_states) or None;
    `run`: the newest MLflow run of this planned run, or None."""
    from leviathan.tracking.runs import Tag

    if run is None or launcher in ("queued", "running"):
        return launcher
    mlflow = MLFLOW_STATES.get(run.info.status, launcher)
    if mlflow == "failed" and run.data.tags.get(Tag.FAILURE_KIND) == DISK_FULL:
        return "disk full"  # a checkpoint found no space (training/checkpoints.py)
    if mlflow != "running":
        return mlflow if launcher in (None, "finished", "unknown") else launcher
    if launcher == "failed" or is_stale(run, now):
        return "lost"
    return "unsynced" if launcher == "finished" else "running"
