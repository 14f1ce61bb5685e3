"""Sweeps for the tests: the real CLI (`python -m leviathan.sweep`), the same work in this
process, plans, sweep.status rows and the sweep's MLflow runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def sweep_cli(args: list[str], timeout: float = 900,
              env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "leviathan.sweep", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=timeout,
                         env=None if env is None else {**os.environ, **env})
    return out


def sweep_here(args: list[str], capsys) -> tuple[int, str]:
    """The sweep entry point's work in this process: (exit code, what it printed), its
    messages set up as the CLI sets them up (leviathan.logs)."""
    from leviathan.cli.sweep import sweep
    from leviathan.config import compose
    from leviathan.logs import setup_logging

    setup_logging()
    capsys.readouterr()
    code = sweep(compose("sweep", args), args)
    return code, capsys.readouterr().out


def status(root: Path, sweep: str) -> list[dict]:
    """sweep.status's rows (`--json`), in this process."""
    from leviathan.sweep.status import collect

    return collect(root / "sweeps" / sweep)


def mlflow_runs(uri: str, sweep: str, kind: str = "train"):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("leviathan")
    return c, c.search_runs([exp.experiment_id],
                            f"tags.kind = '{kind}' and tags.sweep = '{sweep}'")


def plan_for(overrides: list[str], root: Path):
    """(composed sweep config, its SweepPlan) under `root`, in this process."""
    from leviathan.config import compose
    from leviathan.sweep.plan import make_plan

    overrides = [*overrides, f"paths.root_dir={root}"]
    cfg = compose("sweep", overrides)
    return cfg, make_plan(cfg, overrides, root)
