"""Send what jobs left in their run folders' outboxes, then remove it.

Used by `python -m leviathan.sweep.status <sweep> --sync`, by the sweep's relaunch (before it
decides what is finished) and by a finished run started again. A run folder whose outbox a live
process owns (a running job) is left to that process.
"""

from __future__ import annotations

import logging
from pathlib import Path

from leviathan.tracking.outbox import Outbox

log = logging.getLogger(__name__)


def sync_run_dir(run_dir: str | Path, *, uri: str | None = None,
                 timeout_s: float = 60.0) -> tuple[str, int]:
    """(outcome, operations) for one run folder; outcome is nothing | sent | busy (a live
    process owns the outbox) | unreachable (left for later) | error: <why>."""
    from leviathan.tracking.run_tracker import OutboxBusy, RunTracker

    ob = Outbox(run_dir)
    n = ob.pending_count()
    if n == 0:
        return "nothing", 0
    ident = ob.identity()
    if ident is None:
        return f"error: no mlflow_run.json in {run_dir}", n
    tracker = RunTracker(uri or ident["uri"], ident["experiment"], state_dir=run_dir,
                         final_flush_timeout_s=timeout_s,
                         retry_max_backoff_s=max(1.0, min(10.0, timeout_s / 4)))
    try:
        return ("sent" if tracker.replay() else "unreachable"), n
    except OutboxBusy:
        return "busy", n


def finish_if_running(run_id: str, uri: str, timeout_s: float) -> bool:
    """Mark MLflow run `run_id` FINISHED if it is still RUNNING (its job finished, summary.json
    says so, but was killed before its final status was sent). True when it was changed; a
    server that does not answer within `timeout_s` changes nothing (a warning says so)."""
    from leviathan.tracking.server import is_up

    if not is_up(uri, timeout=timeout_s):
        log.warning(f"MLflow at {uri} is not answering: run {run_id} keeps its status there")
        return False
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    client.set_terminated(run_id, "FINISHED")
    log.info(f"MLflow run {run_id} was left RUNNING by a job that had finished: marked FINISHED")
    return True


def sync_runs(run_dirs: dict[str, Path], *, uri: str | None = None,
              timeout_s: float = 60.0) -> dict[str, str]:
    """sync_run_dir for each {run name: run folder}; says one line per folder that had an
    outbox. Returns {run name: outcome} for those."""
    out = {}
    for name, run_dir in run_dirs.items():
        outcome, n = sync_run_dir(run_dir, uri=uri, timeout_s=timeout_s)
        if outcome != "nothing":
            out[name] = outcome
            log.info(f"  sync {name}: {outcome} ({n} queued operations in {run_dir})")
    return out
