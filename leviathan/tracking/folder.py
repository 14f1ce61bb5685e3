"""A run recorded in its run folder only, without MLflow (`tracking.enabled=false`).

For a machine where MLflow is not installed or no server can be reached on purpose (a bare GPU
box measuring the training job, a laptop): the same calls as RunTracker, written to two files
of the run folder instead of a server. Nothing is sent anywhere, ever; nothing here imports
MLflow.

    <run dir>/metrics.jsonl   one line per log_metrics call: {"step": s, "time_ms": t, <key>: v}
    <run dir>/tracking.json   params, tags, artifacts and the final status

summary.json, checkpoints and the config are written by training as in every run.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

from leviathan.tracking.runs import write_atomic

METRICS_FILE = "metrics.jsonl"
RECORD_FILE = "tracking.json"


class FolderTracker:
    """RunTracker's interface (start, log_*, set_tags, sync, finish, close, describe), on disk."""

    run_id: str | None = None  # no MLflow run

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.record_path = self.run_dir / RECORD_FILE
        self.metrics_path = self.run_dir / METRICS_FILE
        self.record: dict[str, Any] = {"params": {}, "tags": {}, "artifacts": [], "status": None}
        if self.record_path.exists():  # a resumed attempt continues the same record
            self.record.update(json.loads(self.record_path.read_text()))
        self.record.setdefault("run_uid", uuid.uuid4().hex)
        self._metrics = None

    @classmethod
    def for_run(cls, ctx: Any) -> FolderTracker:
        return cls(ctx.run_dir)

    @property
    def run_uid(self) -> str:
        return self.record["run_uid"]

    def start(self, *, tags: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
              **_: Any) -> None:
        self.record["status"] = "RUNNING"
        self.set_tags(tags or {})
        self.log_params(params or {})
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run, closed in close()
        self._save()

    def describe(self) -> str:
        return (f"tracking.enabled=false: no MLflow; metrics in {self.metrics_path}, params and "
                f"tags in {self.record_path}")

    def log_params(self, params: dict[str, Any]) -> None:
        for k, v in params.items():  # a resumed run keeps its first values, as MLflow does
            self.record["params"].setdefault(k, str(v))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.record["tags"].update({k: str(v) for k, v in tags.items() if v is not None})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": int(step), "time_ms": int(time.time() * 1000)}
        row.update({k: float(v) for k, v in metrics.items() if math.isfinite(float(v))})
        if self._metrics is None:
            self._metrics = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run, closed in close()
        self._metrics.write(json.dumps(row) + "\n")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        entry = {"path": str(Path(path).resolve()), "dir": artifact_path}
        if entry not in self.record["artifacts"]:
            self.record["artifacts"].append(entry)

    def sync(self) -> None:
        """Everything so far durable on disk (called before each checkpoint)."""
        if self._metrics is not None:
            self._metrics.flush()
            os.fsync(self._metrics.fileno())
        self._save()

    def finish(self, status: str = "FINISHED") -> bool:
        self.record["status"] = status
        return self.close()

    def close(self) -> bool:
        self.sync()
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        return True

    def _save(self) -> None:
        write_atomic(self.record_path, json.dumps(self.record, indent=2, sort_keys=True))


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """<run dir>/metrics.jsonl as one row per step, in step order: the rows of a step merged,
    a later attempt's value winning (a resumed run repeats the steps after its checkpoint); a
    torn last line (a kill mid-write) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    by_step: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        by_step.setdefault(row["step"], {}).update(row)
    return [by_step[s] for s in sorted(by_step)]
