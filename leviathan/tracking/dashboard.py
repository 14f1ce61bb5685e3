"""`make dashboard`: the MLflow UI on 127.0.0.1 over the store the sweeps log to.

Reuses a server already answering at the address (a sweep may have started one); otherwise runs
`mlflow server` in the foreground on the configured store until Ctrl-C. Either way it says which
address opens on the runs of `tracking.experiment` (leviathan.tracking.runs.runs_url): MLflow
3's UI opens an experiment on its GenAI overview ("Traces 0") unless told otherwise.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _defaults(overrides: list[str]) -> tuple[str, str, str]:
    """tracking.uri, paths.mlflow_dir and tracking.experiment from the composed config
    (conf/local/ applies)."""
    from leviathan.config import compose

    cfg = compose("train", overrides)
    return str(cfg.tracking.uri), str(cfg.paths.mlflow_dir), str(cfg.tracking.experiment)


def say_where(address: str, experiment: str) -> None:
    """Log the address that opens on the experiment's runs (the experiment list's, before the
    first run created it)."""
    from mlflow.exceptions import MlflowException

    from leviathan.tracking import runs as tr

    try:
        exp_id = tr.experiment_id(tr.client(address), experiment, create=False)
    except (MlflowException, OSError) as e:  # the UI still serves; only the link is missing
        log.info(f"(could not look up experiment {experiment!r}: {e})")
        return
    if exp_id is None:
        log.info(f"No experiment {experiment!r} yet (a sweep creates it); its runs will be at "
                 f"{address}/#/experiments?workflowType=machine_learning")
    else:
        log.info(f"Open {tr.runs_url(address, exp_id)} : the runs of experiment "
                 f"{experiment!r} (each sweep's parent run holds its runs and its fit)")


def serve(cmd: list[str], env: dict[str, str], address: str, experiment: str) -> int:
    """Run the server in the foreground (its output here) until it exits or Ctrl-C; say where
    to look once it answers."""
    from leviathan.tracking.server import is_up

    proc = subprocess.Popen(cmd, env=env)  # same process group: Ctrl-C reaches it too
    try:
        while proc.poll() is None and not is_up(address, timeout=1.0):
            time.sleep(0.5)
        if proc.poll() is None:
            say_where(address, experiment)
        return proc.wait()
    except KeyboardInterrupt:
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def main(argv: list[str] | None = None) -> int:
    from urllib.parse import urlparse

    from leviathan.tracking.server import is_up, server_command, server_env

    ap = argparse.ArgumentParser(prog="python -m leviathan.tracking.dashboard", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=None, help="default: tracking.uri's port")
    ap.add_argument("--store", default=None, help="the server's store (default: paths.mlflow_dir)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. paths.root_dir=/x")
    args = ap.parse_args(argv)
    from leviathan.errors import LeviathanError
    from leviathan.logs import setup_logging

    setup_logging()
    try:
        uri, store, experiment = _defaults(args.overrides)
    except LeviathanError as e:  # a bad config key; anything else shows its traceback
        log.error(f"error: {e}")
        return 2
    port = args.port or urlparse(uri).port or 5000
    address = f"http://{args.host}:{port}"
    if is_up(address):
        log.info(f"MLflow UI already running: {address}")
        say_where(address, experiment)
        return 0
    store_dir = Path(args.store or store).resolve()
    store_dir.mkdir(parents=True, exist_ok=True)
    log.info(f"MLflow UI on {address} (store {store_dir}); Ctrl-C stops it.")
    return serve(server_command(store_dir, args.host, port), server_env(store_dir), address,
                 experiment)


if __name__ == "__main__":
    sys.exit(main())
