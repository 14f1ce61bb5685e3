"""The MLflow calls behind RunTracker: open (find or create) a run, send queued operations.

Both raise whatever the client raises; `is_final` tells an answer retrying cannot change (the
operation is then dropped) from a transport or server failure (kept and retried).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from leviathan.tracking.runs import Tag, experiment_id, quote

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000
# answers that retrying cannot change. A refused login or permission (UNAUTHENTICATED,
# PERMISSION_DENIED) is not among them: the admin's fix (a user, a grant) makes the same send
# succeed, so what it refused stays in the outbox for the retry, the next start or a sync.
FINAL_ERRORS = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
                "BAD_REQUEST"}


def is_final(e: Exception) -> bool:
    return getattr(e, "error_code", None) in FINAL_ERRORS


def _find(t) -> Any:
    """The tracker's existing run: by its id (from the run folder), else by its run_uid tag."""
    c, ident = t.client, t.ident
    run = None
    if t.known_id:
        try:
            run = c.get_run(t.known_id)
        except Exception as e:
            # the basic-auth app answers 403, not 404, for a run id it cannot place (one this
            # server never had): as good as not there, since this login could not write to it
            if not is_final(e) and getattr(e, "error_code", None) != "PERMISSION_DENIED":
                raise
            log.warning("MLflow run %s is not on %s (%s)", t.known_id, t.uri, e)
        if run is not None and run.info.lifecycle_stage == "deleted":
            log.warning("MLflow run %s was deleted on %s: starting a new run", t.known_id, t.uri)
            return None
    if run is None:
        exp = experiment_id(c, ident["experiment"])
        uid = quote(ident["run_uid"])
        found = c.search_runs([exp], filter_string=f"tags.{Tag.RUN_UID} = {uid}", max_results=1)
        if found:
            run = found[0]
            log.info("found MLflow run %s by its %s tag", run.info.run_id, Tag.RUN_UID)
    return run


def open_run(t) -> None:
    """Find or create the tracker's run. Afterwards t.run_id is set, the server's (key, step)
    pairs are claimed and queued metrics the server already holds are dropped; a training
    attempt also sets a reopened run back to RUNNING with this attempt's tags."""
    from mlflow.entities import RunTag

    c, ident = t.client, t.ident
    tags = {**ident.get("tags", {}), Tag.RUN_UID: ident["run_uid"]}
    if ident.get("parent_run_id"):
        tags[Tag.PARENT] = ident["parent_run_id"]
    run = _find(t)
    held: dict[str, set[int]] = {}
    if run is None:
        run = c.create_run(experiment_id(c, ident["experiment"]),
                           run_name=ident.get("run_name"), tags=tags)
    else:
        rid = run.info.run_id
        if t.is_attempt:
            c.update_run(rid, status="RUNNING")
            c.log_batch(rid, tags=[RunTag(k, v) for k, v in tags.items()])
        for key in run.data.metrics:
            held[key] = {m.step for m in c.get_metric_history(rid, key)}
    t.outbox.held(held)
    t.have_params = set(run.data.params)
    t.run_id = run.info.run_id
    t.outbox.write_run_id(t.run_id)
    log.info("MLflow run %s open at %s", t.run_id, t.uri)


def send_group(t, kind: str, group: list[dict[str, Any]]) -> None:
    """Send one queued operation (or, for metrics, consecutive ones merged into one batch)."""
    from mlflow.entities import Metric, Param, RunTag

    c, rid, op = t.client, t.run_id, group[0]
    if kind == "metrics":
        batch = [Metric(k, v, ms, step) for o in group for k, v, ms, step in o["m"]]
        c.log_batch(rid, metrics=batch, synchronous=True)
    elif kind == "params":
        todo = [Param(k, v) for k, v in op["p"].items() if k not in t.have_params]
        for i in range(0, len(todo), MAX_PARAMS_PER_BATCH):
            chunk = todo[i:i + MAX_PARAMS_PER_BATCH]
            c.log_batch(rid, params=chunk)
            t.have_params.update(p.key for p in chunk)
    elif kind == "tags":
        c.log_batch(rid, tags=[RunTag(k, v) for k, v in op["t"].items()])
    elif kind == "artifact":
        if os.path.isfile(op["path"]):
            c.log_artifact(rid, op["path"], op.get("dir"))
        else:
            log.warning("artifact %s no longer exists: not sent to run %s", op["path"], rid)
    elif kind == "status":
        c.set_terminated(rid, status=op["s"])
    elif kind == "sweep_end":
        end_sweep(c, op["parent"])
    else:
        log.warning("unknown outbox operation %r skipped", kind)


def end_sweep(c, parent_id: str) -> None:
    """Queued by a sweep's job after its run's final status: when every run of the sweep has
    ended, its parent run ends too (FINISHED, or FAILED if one failed). Each job ends its own run
    before it looks, so of the jobs that end together the last to look sees them all."""
    from leviathan.tracking.runs import sweep_state

    if c.get_run(parent_id).info.status != "RUNNING":
        return
    state = sweep_state(c, parent_id)
    if state is not None:
        c.set_terminated(parent_id, status=state)
        log.info("sweep parent run %s: every planned run has ended: %s", parent_id, state)
