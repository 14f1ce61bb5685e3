"""MLflow over HTTP that survives network blips and resumes runs without duplicated steps.

`RunTracker` owns one MLflow run. Metrics go into a buffer that a background thread sends with
`log_batch`; a failed send keeps the buffer and retries with exponential backoff, so a blip
never stops training and never loses a value. At the end the buffer is flushed with a deadline;
whatever still cannot be sent is spilled to a JSON-lines file that the next start re-sends.
A resumed run (same run id) skips (key, step) pairs the server already holds, so a step logged
before a crash is never written twice.

Lightning's MLFlowLogger logs synchronously through the fluent client (a blip raises inside the
training loop) and cannot dedupe a resumed run's steps, hence this small class.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000


# answers that retrying cannot change
FINAL_ERRORS = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
                "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST"}
HTTP_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


def _final(e: Exception) -> bool:
    return getattr(e, "error_code", None) in FINAL_ERRORS


def _retry(fn: Callable[[], Any], what: str, *, deadline_s: float, backoff_s: float,
           max_backoff_s: float) -> Any:
    """Call `fn` until it succeeds or `deadline_s` passes (then re-raise the last error)."""
    end = time.monotonic() + deadline_s
    wait = backoff_s
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - any transport/server error is retried
            if _final(e) or time.monotonic() + wait > end:
                raise
            log.warning("MLflow %s failed (%s); retrying in %.1fs", what, e, wait)
            time.sleep(wait)
            wait = min(max_backoff_s, wait * 2)


class RunTracker:
    """One MLflow run: params, tags, buffered metrics, artifacts, status."""

    def __init__(self, uri: str, experiment: str, *, http_timeout_s: float = 10.0,
                 flush_every_s: float = 5.0, retry_backoff_s: float = 1.0,
                 retry_max_backoff_s: float = 60.0, final_flush_timeout_s: float = 300.0,
                 spill_path: str | Path | None = None) -> None:
        # One quick HTTP attempt per call: the retrying happens here, off the training thread.
        # (MLflow reads these per request; the previous values come back in close().)
        self._saved_env = {k: os.environ.get(k) for k in HTTP_ENV}
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(http_timeout_s)))
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=uri)
        self.flush_every_s = flush_every_s
        self.backoff_s = retry_backoff_s
        self.max_backoff_s = retry_max_backoff_s
        self.final_flush_timeout_s = final_flush_timeout_s
        self.spill_path = Path(spill_path) if spill_path else None
        self.run_id: str | None = None
        self._buffer: list[tuple[str, float, int, int]] = []  # (key, value, ms, step)
        self._seen: dict[str, set[int]] = {}  # steps the server already holds, per key
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed_sends = 0  # sends that failed and were retried (observability, tests)

    def _call(self, fn: Callable[[], Any], what: str, deadline_s: float | None = None) -> Any:
        return _retry(fn, what, deadline_s=deadline_s or self.final_flush_timeout_s,
                      backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s)

    # ---------------------------------------------------------------- run lifecycle
    def start(self, *, run_id: str | None = None, run_name: str | None = None,
              tags: dict[str, Any] | None = None, parent_run_id: str | None = None) -> str:
        """Create a run, or reopen `run_id` (status back to RUNNING, known steps loaded)."""
        tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        if run_id is None:
            exp = self._call(lambda: self.client.get_experiment_by_name(self.experiment),
                             "get_experiment")
            exp_id = exp.experiment_id if exp is not None else self._call(
                lambda: self._create_experiment(), "create_experiment")
            run = self._call(lambda: self.client.create_run(exp_id, run_name=run_name, tags=tags),
                             "create_run")
            self.run_id = run.info.run_id
        else:
            try:
                run = self._call(lambda: self.client.get_run(run_id), "get_run")
            except Exception as e:
                if not _final(e):
                    raise
                log.warning("MLflow run %s is not on %s (%s): starting a new run", run_id,
                            self.uri, e)
                return self.start(run_name=run_name, tags=tags, parent_run_id=parent_run_id)
            self.run_id = run_id
            self._call(lambda: self.client.update_run(run_id, status="RUNNING"), "update_run")
            for key in run.data.metrics:
                hist = self._call(lambda k=key: self.client.get_metric_history(run_id, k),
                                  "get_metric_history")
                self._seen[key] = {m.step for m in hist}
            if tags:
                self.set_tags(tags)
        self._load_spill()
        self._thread = threading.Thread(target=self._loop, name="mlflow-writer", daemon=True)
        self._thread.start()
        return self.run_id

    def _create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(self.experiment)
        except MlflowException:  # created concurrently by another job
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def finish(self, status: str = "FINISHED") -> bool:
        """Flush (with the final deadline), then mark the run; False when metrics were spilled."""
        ok = self.close(restore_env=False)
        if self.run_id is not None:
            try:
                self._call(lambda: self.client.set_terminated(self.run_id, status=status),
                           "set_terminated")
            except Exception as e:  # noqa: BLE001
                log.error("could not mark MLflow run %s %s: %s", self.run_id, status, e)
        self._restore_env()
        return ok

    def _restore_env(self) -> None:
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def close(self, restore_env: bool = True) -> bool:
        """Stop the writer thread and flush what is buffered; spill on final failure."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        ok = self.flush(deadline_s=self.final_flush_timeout_s)
        if not ok:
            self._spill()
        elif self.spill_path is not None and self.spill_path.exists():
            self.spill_path.unlink()  # everything it held has been sent
        if restore_env:
            self._restore_env()
        return ok

    # ---------------------------------------------------------------- logging
    def log_params(self, params: dict[str, Any]) -> None:
        """Log params the run does not hold yet (a resumed run keeps its first values)."""
        from mlflow.entities import Param

        have = self._call(lambda: self.client.get_run(self.run_id), "get_run").data.params
        todo = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items() if k not in have]
        for i in range(0, len(todo), MAX_PARAMS_PER_BATCH):
            chunk = todo[i:i + MAX_PARAMS_PER_BATCH]
            self._call(lambda c=chunk: self.client.log_batch(self.run_id, params=c), "log_params")

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if batch:
            self._call(lambda: self.client.log_batch(self.run_id, tags=batch), "set_tags")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffer metrics for `step`; never blocks on the network."""
        ms = int(time.time() * 1000)
        with self._lock:
            for k, v in metrics.items():
                if step in self._seen.get(k, ()):
                    continue
                v = float(v)
                if math.isfinite(v):
                    self._buffer.append((k, v, ms, int(step)))
        if len(self._buffer) >= MAX_METRICS_PER_BATCH:
            self._wake.set()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
                   "log_artifact")

    # ---------------------------------------------------------------- sending
    def _send_some(self) -> bool:
        """Send one batch from the buffer; True when it went through (or nothing to send)."""
        from mlflow.entities import Metric

        with self._lock:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
        if not chunk:
            return True
        batch = [Metric(k, v, ms, step) for k, v, ms, step in chunk]
        try:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
        except Exception as e:  # noqa: BLE001
            self.failed_sends += 1
            log.warning("MLflow send of %d metrics to %s failed (%s); kept for retry",
                        len(batch), self.uri, e)
            return False
        with self._lock:
            del self._buffer[:len(chunk)]
            for k, _, _, step in chunk:
                self._seen.setdefault(k, set()).add(step)
        return True

    def flush(self, deadline_s: float | None = None) -> bool:
        """Send everything buffered, retrying with backoff until `deadline_s`."""
        end = time.monotonic() + (deadline_s if deadline_s is not None else self.flush_every_s)
        wait = self.backoff_s
        while True:
            with self._lock:
                pending = len(self._buffer)
            if pending == 0:
                return True
            if self._send_some():
                wait = self.backoff_s
                continue
            if time.monotonic() + wait > end:
                return False
            time.sleep(wait)
            wait = min(self.max_backoff_s, wait * 2)

    def _loop(self) -> None:
        wait = self.flush_every_s
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            ok = True
            while ok and self._buffer:
                ok = self._send_some()
            wait = self.flush_every_s if ok else min(self.max_backoff_s,
                                                    max(self.backoff_s, wait * 2))

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    # ---------------------------------------------------------------- spill to disk
    def _spill(self) -> None:
        if self.spill_path is None or not self._buffer:
            log.error("MLflow unreachable at %s: %d metric values lost", self.uri,
                      len(self._buffer))
            return
        self.spill_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.spill_path.with_suffix(".tmp")
        with open(tmp, "w") as f:  # the buffer already holds any earlier spill: replace it
            for item in self._buffer:
                f.write(json.dumps({"run_id": self.run_id, "m": item}) + "\n")
        os.replace(tmp, self.spill_path)
        log.error("MLflow unreachable at %s: %d metric values kept in %s (re-sent on the next "
                  "start of this run)", self.uri, len(self._buffer), self.spill_path)
        self._buffer.clear()

    def _load_spill(self) -> None:
        if self.spill_path is None or not self.spill_path.exists():
            return
        with self._lock:
            for line in self.spill_path.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("run_id") == self.run_id:
                    k, v, ms, step = rec["m"]
                    if step not in self._seen.get(k, ()):
                        self._buffer.append((k, float(v), int(ms), int(step)))
