"""`make dashboard`: the MLflow UI on 127.0.0.1 over the store the sweeps log to.

Reuses a server already answering at the address (a sweep may have started one); otherwise runs
`mlflow server` in the foreground on the configured store until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def _defaults(overrides: list[str]) -> tuple[str, str]:
    """tracking.uri and paths.mlflow_dir from the composed config (conf/local/ applies)."""
    from leviathan.config import compose

    cfg = compose("train", overrides)
    return str(cfg.tracking.uri), str(cfg.paths.mlflow_dir)


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
        uri, store = _defaults(args.overrides)
    except LeviathanError as e:  # a bad config key; anything else shows its traceback
        log.error(f"error: {e}")
        return 2
    port = args.port or urlparse(uri).port or 5000
    address = f"http://{args.host}:{port}"
    if is_up(address):
        log.info(f"MLflow UI already running: {address}")
        return 0
    store_dir = Path(args.store or store).resolve()
    store_dir.mkdir(parents=True, exist_ok=True)
    log.info(f"MLflow UI on {address} (store {store_dir}); Ctrl-C stops it.")
    cmd = server_command(store_dir, args.host, port)
    os.environ.update(server_env(store_dir))
    os.execv(cmd[0], cmd) if os.path.isabs(cmd[0]) else os.execvp(cmd[0], cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
