"""Shared test scaffolding (tests/ is on pytest's pythonpath: `from helpers import REPO`).

helpers.train: the tiny training runs; helpers.sweep: sweeps, status, MLflow queries;
helpers.mlflow_world: synthetic sweeps logged straight to MLflow for the analysis;
helpers.browser: headless Chromium reading what a page of the MLflow UI shows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
SHARED = Path(os.environ.get("LEVIATHAN_SHARED", REPO.parent / "shared")).resolve()
TOKENIZERS = SHARED / "tokenizers"


def wait_for(pred: Callable[[], Any], timeout: float, what: str, poll: float = 1.0) -> Any:
    """pred()'s first truthy value, polled every `poll` s; AssertionError naming `what` after
    `timeout` s. Tests wait for the event itself, never for an assumed duration."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
