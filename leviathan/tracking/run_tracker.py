"""MLflow for a training job that never waits on, and never loses anything to, the server.

`RunTracker` owns one MLflow run. Every operation (params, tags, metrics, artifacts, the final
status) is appended to the run folder's outbox (leviathan.tracking.outbox) and queued; a writer
thread sends the queue in order, with exponential backoff after a failure, so a network blip or
a server restart never stops training and never loses a value.

Training does not wait for the server at start. When it does not answer, training begins anyway
and everything waits in the outbox while the writer keeps trying to open the run (create it, or
find it again) for `start_timeout_s`; then params, tags and the buffered metrics follow, in
order. Waiting before training instead would leave the allocation idle (after hours in the queue,
perhaps) and, in a DDP job, hold the other ranks in their first collective on rank 0's network.
If the server still has not answered after `start_timeout_s`, the writer stops trying and
training still finishes; the outbox is sent by the next start of the run or by
`python -m leviathan.sweep.status <sweep> --sync`. While the run is open, the writer sets its
`heartbeat` tag every `heartbeat_every_s`, so a run left RUNNING by a dead job can be told apart.

Nothing is written twice:
- the run is created once: its `run_uid` tag (kept in the run folder) lets a retry, a resumed
  attempt or a sync find a run whose creation answer was lost instead of creating another;
- an opened run loads the (key, step) pairs the server holds; a metric for a pair already held
  or queued is dropped, so the steps a resumed job recomputes after its checkpoint are not
  logged again;
- a batch re-sent after a lost answer carries the same timestamps, and MLflow's SQL store drops
  exact duplicates.
At the end the queue is sent within `final_flush_timeout_s` (after a random wait of up to
`final_flush_spread_s`, so that an array's jobs ending together do not reach the server at one
instant); what remains stays in the outbox.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.redaction import redact
from leviathan.tracking.mlflow_ops import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_CHARS,
    is_final,
    open_run,
    send_group,
)
from leviathan.tracking.outbox import Outbox
from leviathan.tracking.runs import Tag

log = logging.getLogger(__name__)

HTTP_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
SYNC_HINT = "python -m leviathan.sweep.status <sweep> --sync"
# The default final_flush_spread_s is capped: 256 jobs over 5 s is ~50 final sends a second,
# which a PostgreSQL-backed server takes (bench tracking), and 5 s is nothing beside a job.
MAX_DEFAULT_SPREAD_S = 5.0


def final_flush_spread(flush_every_s: float, given: float | None = None) -> float:
    """tracking.final_flush_spread_s: `given`, else the periodic sends' jitter window (+-20% of
    flush_every_s), at most MAX_DEFAULT_SPREAD_S."""
    return min(0.4 * flush_every_s, MAX_DEFAULT_SPREAD_S) if given is None else given


class OutboxBusy(LeviathanError, RuntimeError):
    """Another process (a running job, or a sync) is sending this run's outbox."""


class RunTracker:
    """One MLflow run, fed from an on-disk outbox by a writer thread."""

    def __init__(self, uri: str, experiment: str, *, state_dir: str | Path | None = None,
                 http_timeout_s: float = 30.0, flush_every_s: float = 5.0,
                 retry_backoff_s: float = 1.0, retry_max_backoff_s: float = 60.0,
                 final_flush_timeout_s: float = 300.0, start_timeout_s: float = 900.0,
                 heartbeat_every_s: float = 60.0,
                 final_flush_spread_s: float | None = None) -> None:
        # One quick HTTP attempt per call: the retrying happens here, off the training thread.
        # (MLflow reads these per request; the previous values come back in close().)
        self._saved_env = {k: os.environ.get(k) for k in HTTP_ENV}
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(http_timeout_s)))
        # MLflow's usage telemetry calls home from a thread (compute nodes are often offline)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.uri, self.experiment = uri, experiment
        self.client = MlflowClient(tracking_uri=uri)
        self.outbox = Outbox(state_dir)  # the queue (journaled when state_dir is given)
        self.flush_every_s, self.backoff_s = flush_every_s, retry_backoff_s
        self.max_backoff_s, self.final_flush_timeout_s = retry_max_backoff_s, final_flush_timeout_s
        self.start_timeout_s, self.heartbeat_every_s = start_timeout_s, heartbeat_every_s
        self.final_flush_spread_s = final_flush_spread(flush_every_s, final_flush_spread_s)
        self.run_id: str | None = None
        self.ident: dict[str, Any] = {}
        self.known_id: str | None = None  # the run id to reopen (from the run folder)
        self.is_attempt = True  # a training attempt (RUNNING, heartbeat), not a replay
        self.have_params: set[str] | None = None
        self._send_lock = threading.Lock()  # one sender at a time
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._start_deadline = 0.0
        self._gave_up = False
        self._last_beat = 0.0
        self._head_since: float | None = None
        self.failed_sends = 0  # sends that failed and were retried (observability, tests)
        self.flush_ms: list[float] = []  # per metrics batch: first attempt -> stored (bench)

    @classmethod
    def from_config(cls, trk: Any, state_dir: str | Path) -> RunTracker:
        """From a TrackingConfig (leviathan.tracking.config)."""
        return cls(trk.uri, trk.experiment, state_dir=state_dir, http_timeout_s=trk.http_timeout_s,
                   flush_every_s=trk.flush_every_s, retry_backoff_s=trk.retry_backoff_s,
                   retry_max_backoff_s=trk.retry_max_backoff_s,
                   final_flush_timeout_s=trk.final_flush_timeout_s,
                   start_timeout_s=trk.start_timeout_s, heartbeat_every_s=trk.heartbeat_every_s,
                   final_flush_spread_s=trk.final_flush_spread_s)

    @classmethod
    def for_run(cls, ctx: Any) -> RunTracker:
        """A training run's tracker: its tracking config, its run folder's outbox (ctx: the
        run's leviathan.training.context.RunContext)."""
        return cls.from_config(ctx.trk, state_dir=ctx.run_dir)

    # ---------------------------------------------------------------- lifecycle
    def start(self, *, run_id: str | None = None, run_name: str | None = None,
              tags: dict[str, Any] | None = None, parent_run_id: str | None = None,
              params: dict[str, Any] | None = None, wait_s: float | None = None) -> str | None:
        """Begin a training attempt: replay what an earlier attempt left in the outbox, queue
        `params`, try to open the run (create it, or reopen `run_id` / the run folder's run) for
        up to `wait_s` here (None: one try), then keep going in the writer thread.
        Returns the run id, or None while the server does not answer."""
        ob = self.outbox
        if not ob.lock(timeout_s=60.0):
            log.warning("%s: another process holds its outbox lock; sending anyway", ob.dir)
        old = ob.identity() or {}
        self.ident = {"run_uid": old.get("run_uid") or uuid.uuid4().hex, "uri": self.uri,
                       "experiment": self.experiment, "run_name": run_name or old.get("run_name"),
                       "tags": {k: str(v) for k, v in redact(tags or {}).items()
                                if v is not None}
                       or old.get("tags", {}),
                       "parent_run_id": parent_run_id or old.get("parent_run_id")}
        ob.write_identity(self.ident)
        self.known_id = run_id or ob.run_id()
        self.is_attempt = True
        if ob.restore(drop_status=True):  # an earlier attempt's final status is superseded
            log.info("%s: %d operations of an earlier attempt queued again", ob.journal,
                     len(ob.ops))
        if params:
            self.log_params(params)
        self._start_deadline = time.monotonic() + self.start_timeout_s
        self._try_open(wait_s or 0.0)
        self._thread = threading.Thread(target=self._loop, name="mlflow-writer", daemon=True)
        self._thread.start()
        return self.run_id

    def replay(self) -> bool:
        """Send what an earlier process left in the outbox (no new attempt: the run's status is
        not touched except by the operations themselves). True when all of it was sent;
        OutboxBusy when a live process owns the outbox."""
        ob = self.outbox
        if ob.dir is None or not ob.lock(timeout_s=0.0):
            self._restore_env()
            raise OutboxBusy(f"{ob.dir}: its outbox is being sent by another process (a running "
                             "job or a sync)")
        ident = ob.identity()
        if ident is None:
            ob.unlock()
            self._restore_env()
            raise FileNotFoundError(f"{ob.dir}: outbox without mlflow_run.json: cannot tell "
                                    "which MLflow run it belongs to")
        self.ident, self.known_id, self.is_attempt = ident, ob.run_id(), False
        ob.restore(drop_status=False)
        return self.close()

    def finish(self, status: str = "FINISHED") -> bool:
        """Queue the final status and close; False when something is left in the outbox.

        Unless the job was killed (a preempted job's grace period is short), the final send waits
        a random 0..final_flush_spread_s first, as the periodic sends are jittered: the jobs of an
        array that end together (same steps, same start) then reach the server spread over that
        window instead of all at one instant (bench tracking: this burst set the p99 flush). The
        status is journaled before that wait: a job killed during it leaves it in the outbox."""
        self.outbox.put({"op": "status", "s": status})
        parent = self.ident.get("parent_run_id") if self.is_attempt else None
        if parent and status != "KILLED":  # the last run of a sweep to end ends its parent
            self.outbox.put({"op": "sweep_end", "parent": parent})
        if status != "KILLED" and self.final_flush_spread_s > 0:
            time.sleep(random.uniform(0.0, self.final_flush_spread_s))
        return self.close()

    def close(self) -> bool:
        """Stop the writer, send the queue within final_flush_timeout_s; what cannot be sent
        stays in the outbox. True when everything was sent."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        ok = self.flush(deadline_s=self.final_flush_timeout_s)
        ob = self.outbox
        if ok:
            ob.clear()
        else:
            ob.close()
            log.error("MLflow %s unreachable: %d operations (%d metric values) of run %s %s",
                      self.uri, len(ob.ops), ob.pending_metrics, self.run_id or "(not created)",
                      f"kept in {ob.journal}; sent by the next start of this run or `{SYNC_HINT}`"
                      if ob.journal else "lost (no run folder)")
        ob.unlock()
        self._restore_env()
        return ok

    def _restore_env(self) -> None:
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    @property
    def run_uid(self) -> str | None:
        """The run's idempotency key (its `run_uid` tag), known before the server answers."""
        return self.ident.get("run_uid")

    def describe(self) -> str:
        if self.run_id:
            return f"MLflow run {self.run_id} at {self.uri} (experiment {self.experiment})"
        where = self.outbox.journal or "memory"
        return (f"MLflow at {self.uri} is not answering yet: the run opens when it does; until "
                f"then params, tags and metrics wait in {where}")

    # ---------------------------------------------------------------- logging (never blocks)
    def log_params(self, params: dict[str, Any]) -> None:
        """Params the run does not hold yet (a resumed run keeps its first values)."""
        self.outbox.put({"op": "params", "p": {k: str(v)[:MAX_PARAM_CHARS]
                                               for k, v in redact(params).items()}})

    def set_tags(self, tags: dict[str, Any]) -> None:
        tags = {k: str(v) for k, v in redact(tags).items() if v is not None}
        if tags:
            self.outbox.put({"op": "tags", "t": tags})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue metrics for `step` (non-finite values are skipped)."""
        ms = int(time.time() * 1000)
        vals = [[k, float(v), ms, int(step)] for k, v in metrics.items()
                if math.isfinite(float(v))]
        for i in range(0, len(vals), MAX_METRICS_PER_BATCH):
            self.outbox.put({"op": "metrics", "m": vals[i:i + MAX_METRICS_PER_BATCH]})
        if self.outbox.pending_metrics >= MAX_METRICS_PER_BATCH:
            self._wake.set()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.outbox.put({"op": "artifact", "path": str(Path(path).resolve()),
                         "dir": artifact_path})

    def sync(self) -> None:
        """Make everything queued so far durable on disk (called before each checkpoint)."""
        self.outbox.sync()

    @property
    def pending(self) -> int:
        """Metric values not confirmed by the server yet."""
        return self.outbox.pending_metrics

    # ---------------------------------------------------------------- sending
    def _open(self) -> None:
        open_run(self)
        if self.is_attempt:  # a run opened late (e.g. by the final flush) still says it lived
            self._beat()

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        try:
            self.client.set_tag(self.run_id, Tag.HEARTBEAT, str(int(time.time())))
        except Exception as e:  # noqa: BLE001 - the next beat tries again
            log.debug("heartbeat failed: %s", e)

    def _send_next(self) -> bool:
        """Send the head of the queue; False when the server failed (it stays queued)."""
        group = self.outbox.head(MAX_METRICS_PER_BATCH)
        if not group:
            return True
        kind = group[0]["op"]
        if self._head_since is None:
            self._head_since = time.monotonic()
        try:
            send_group(self, kind, group)
        except Exception as e:  # noqa: BLE001 - any transport/server error is retried
            if not is_final(e):
                self.failed_sends += 1
                log.warning("MLflow %s to %s failed (%s); kept for retry", kind, self.uri, e)
                return False
            log.error("MLflow %s refused by %s (%s): dropped", kind, self.uri, e)
        if kind == "metrics":
            self.flush_ms.append((time.monotonic() - self._head_since) * 1000)
        self._head_since = None
        self.outbox.done(group)
        return True

    def _drain_locked(self, everything: bool = True) -> bool:
        """Open the run if needed, then send the queue (send lock held). The writer's rounds
        send only what was queued when they began: under a slow server, steps queued meanwhile
        wait for the next round as one batch instead of trickling out as many small ones."""
        if self.run_id is None:
            self._open()
        todo = len(self.outbox.ops)
        while self.outbox.ops and (everything or todo > 0):
            n = len(self.outbox.head(MAX_METRICS_PER_BATCH))
            if not self._send_next():
                return False
            todo -= n
        return True

    def _try_open(self, wait_s: float) -> bool:
        end = time.monotonic() + wait_s
        wait = self.backoff_s
        while True:
            with self._send_lock:
                try:
                    self._open()
                    return True
                except Exception as e:  # noqa: BLE001
                    if is_final(e) or time.monotonic() + wait > end:
                        log.warning("MLflow %s: cannot open the run yet (%s)", self.uri, e)
                        return False
            time.sleep(wait)
            wait = min(self.max_backoff_s, wait * 2)

    def flush(self, deadline_s: float | None = None) -> bool:
        """Send everything queued, retrying with backoff until `deadline_s` (default
        flush_every_s) passes. True when the queue is empty."""
        end = time.monotonic() + (deadline_s if deadline_s is not None else self.flush_every_s)
        wait = self.backoff_s
        while True:
            with self._send_lock:
                try:
                    if self._drain_locked():
                        return True
                except Exception as e:  # noqa: BLE001 - opening failed
                    if is_final(e):
                        log.error("MLflow %s refused to open the run: %s", self.uri, e)
                        return False
            if time.monotonic() + wait > end:
                return False
            time.sleep(wait)
            wait = min(self.max_backoff_s, wait * 2)

    def _pump(self, send: bool) -> bool:
        """One round of the writer: open the run if needed (then send what waited), send the
        queue when `send`, beat when due. False when the server failed."""
        with self._send_lock:
            if self.run_id is None and self._gave_up:
                return True
            try:
                if self.run_id is None:
                    self._open()
                    send = True
                if send and not self._drain_locked(everything=False):
                    return False
            except Exception as e:  # noqa: BLE001 - opening failed
                if is_final(e) or time.monotonic() >= self._start_deadline:
                    self._gave_up = True
                    log.error("MLflow %s (tracking.uri) has not opened the run within "
                              "tracking.start_timeout_s=%.0fs (%s): training goes on; everything "
                              "stays in %s, sent by the next start of this run or `%s`",
                              self.uri, self.start_timeout_s, e,
                              self.outbox.journal or "memory", SYNC_HINT)
                    return True
                log.warning("MLflow %s not answering (%s); the run opens when it does",
                            self.uri, e)
                return False
            if self.is_attempt and time.monotonic() - self._last_beat >= self.heartbeat_every_s:
                self._beat()
            return True

    def _loop(self) -> None:
        """Send every flush_every_s (+-20%; at once when log_metrics wakes it: a full batch), beat
        every heartbeat_every_s; after a failure retry with exponential backoff."""
        backoff, next_send = self.backoff_s, 0.0
        while not self._stop.is_set():
            due = next_send
            if self.run_id is not None and self.is_attempt:
                due = min(due, self._last_beat + self.heartbeat_every_s)
            woke = self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            send = woke or time.monotonic() >= next_send
            if self._pump(send):
                backoff = self.backoff_s
                if send:  # +-20% jitter: the jobs of an array that started together drift
                    # apart instead of hitting the server at the same instant every interval
                    next_send = time.monotonic() + self.flush_every_s * random.uniform(0.8, 1.2)
            else:
                next_send = time.monotonic() + backoff
                backoff = min(self.max_backoff_s, backoff * 2)
