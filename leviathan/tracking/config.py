"""The `tracking` config group: how a run talks to the MLflow tracking server, validated.

Errors name the config key (``tracking.<field>``); they are TrainConfigErrors, as every check of
a run's config before training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leviathan.errors import TrainConfigError
from leviathan.typed_config import above, boolean, check_fields, in_range, optional, text


@dataclass
class TrackingConfig:
    enabled: bool = True  # false: no MLflow at all (a bare GPU box): the run folder's
    #   metrics.jsonl and tracking.json only (leviathan/tracking/folder.py)
    uri: str = "${oc.env:MLFLOW_TRACKING_URI,http://127.0.0.1:5000}"  # tracking server (a sweep
    #   checks it before submitting; `make tracking-server`: PostgreSQL with several workers)
    credentials_file: str | None = None  # a 0600 file with `username=` and `password=` lines: the
    #   login to a server with authentication (`make tracking-server` off loopback); default: the
    #   user:password@ of uri, else MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
    experiment: str = "leviathan"  # MLflow experiment name
    parent_run_id: str | None = None  # a sweep's parent run: this run becomes its nested child
    connect_timeout_s: float = 5.0  # at start, how long to wait for an answer before training
    #   without one (start_timeout_s=0: fail instead)
    start_timeout_s: float = 900.0  # keep trying to open the run this long while training
    #   (metrics wait in the run folder's mlflow_outbox.jsonl); 0: fail at once instead
    http_timeout_s: float = 30.0  # one HTTP request's timeout (an abandoned request is sent again:
    #   more load)
    flush_every_s: float = 5.0  # the background writer sends buffered metrics this often
    heartbeat_every_s: float = 60.0  # the run's `heartbeat` tag is set this often (sweep.status:
    #   lost after 5 missed)
    retry_backoff_s: float = 1.0  # first wait after a failed send; doubles each failure
    retry_max_backoff_s: float = 60.0  # cap on the wait between retries
    final_flush_timeout_s: float = 300.0  # at the end, keep retrying this long; the rest stays in
    #   the outbox (re-sent by the next launch/resume or `sweep.status --sync`)
    final_flush_spread_s: float | None = None  # before the final send, wait a random 0..this, so
    #   jobs ending together reach the server spread out (not when killed); default 0.4 x
    #   flush_every_s (the periodic sends' jitter window), at most 5 s; 0: send at once

    _checks = {
        "enabled": boolean(), "credentials_file": optional(text()),
        "connect_timeout_s": above(0), "start_timeout_s": in_range(0),
        "http_timeout_s": above(0), "flush_every_s": above(0), "heartbeat_every_s": above(0),
        "retry_backoff_s": above(0), "retry_max_backoff_s": above(0),
        "final_flush_timeout_s": above(0), "final_flush_spread_s": optional(in_range(0)),
    }

    def __post_init__(self) -> None:
        if not self.uri:
            raise TrainConfigError("tracking.uri: must be set (e.g. http://127.0.0.1:5000)")
        check_fields(self, "tracking", TrainConfigError)


def tracking_config(cfg: Any) -> TrackingConfig:
    node = cfg.tracking if hasattr(cfg, "tracking") else cfg
    from leviathan.typed_config import to_config

    return to_config(TrackingConfig, node, "tracking", TrainConfigError)
