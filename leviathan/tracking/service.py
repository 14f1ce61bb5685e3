"""`make tracking-server`: MLflow on PostgreSQL with several workers, in a folder you name.

    python -m leviathan.tracking.service up --dir DIR [--host 0.0.0.0] [--port 5000] [--workers 4]
    python -m leviathan.tracking.service status --dir DIR     (exit 0: both up)
    python -m leviathan.tracking.service down --dir DIR
    python -m leviathan.tracking.service env --dir DIR        (export MLFLOW_TRACKING_URI=...)

DIR holds the PostgreSQL cluster (leviathan.tracking.postgres), the artifacts, mlflow.pid,
service.json and the server's log (server-<port>.log). `up` is idempotent and restarts what is
down. The server runs MLflow's default uvicorn with `--workers` processes, each with a
SQLAlchemy pool of 10 connections + 20 overflow (PostgreSQL's max_connections is sized to
match); the GenAI job runner is off. This is what a cluster needs once more than a few jobs log
at once; SQLite (one writer, `make dashboard`, `make demo`) stays the default for a laptop.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.tracking.postgres import CONNECTIONS_PER_WORKER, Postgres

log = logging.getLogger(__name__)

POOL_SIZE, MAX_OVERFLOW = 10, 20  # per worker: CONNECTIONS_PER_WORKER in all


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _info(d: Path) -> dict[str, Any]:
    path = d / "service.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _allowed_hosts(host: str) -> list[str]:
    """Off loopback, MLflow 3 answers only Host headers it knows: add this machine's names to
    its defaults (localhost and private addresses), so jobs can use http://<login node>:<port>."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return []
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = {socket.gethostname(), socket.getfqdn()}
    extra = [p for n in sorted(names) for p in (n, f"{n}:*")]
    return ["--allowed-hosts", ",".join(get_default_allowed_hosts() + extra)]


def up(d: str | Path, *, host: str = "127.0.0.1", port: int = 5000, workers: int = 4,
       timeout_s: float = 300.0) -> dict[str, Any]:
    """Start PostgreSQL and the MLflow server over it (whatever is not running yet)."""
    from leviathan.tracking.server import free_port, is_up, start_server

    d = Path(d).absolute()
    info = _info(d)
    if _alive(info.get("pid")) and is_up(info["uri"]):
        log.info(f"MLflow on PostgreSQL already running: {info['uri']} (pid {info['pid']})")
        return info
    pg = Postgres(d, max_connections=workers * CONNECTIONS_PER_WORKER + 20)
    if pg.init(port=free_port()):
        log.info(f"initialised PostgreSQL in {pg.data}")
    pg.start()
    log.info(f"PostgreSQL running on 127.0.0.1:{pg.port} (log {pg.log})")
    env = {**pg.env(), "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(POOL_SIZE),
           "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(MAX_OVERFLOW)}
    server = start_server(d, host=host, port=port, backend_uri=pg.uri, workers=workers,
                          env=env, extra_args=_allowed_hosts(host), timeout=timeout_s)
    public = f"http://{socket.getfqdn()}:{port}" if _allowed_hosts(host) else server.uri
    info = {"uri": server.uri, "public_uri": public, "host": host, "port": port,
            "workers": workers, "pid": server.process.pid, "backend": pg.uri,
            "log": str(server.log_path)}
    (d / "service.json").write_text(json.dumps(info, indent=1))
    (d / "mlflow.pid").write_text(f"{server.process.pid}\n")
    log.info(f"MLflow on PostgreSQL: {server.uri} ({workers} workers, pid {server.process.pid}, "
             f"log {server.log_path}). Jobs: tracking.uri={public}")
    return info


def down(d: str | Path) -> None:
    """Stop the MLflow server (its whole process group), then PostgreSQL."""
    d = Path(d).absolute()
    pid = _info(d).get("pid")
    if _alive(pid):
        os.killpg(pid, signal.SIGTERM)
        for _ in range(200):
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
        log.info(f"stopped the MLflow server (pid {pid})")
    else:
        log.info("MLflow server not running")
    (d / "mlflow.pid").unlink(missing_ok=True)
    if (d / "pgdata").exists():
        log.info("stopped PostgreSQL" if Postgres(d).stop() else "PostgreSQL not running")


def status(d: str | Path) -> dict[str, Any]:
    from leviathan.tracking.server import is_up

    d = Path(d).absolute()
    info = _info(d)
    pg = Postgres(d)
    return {"dir": str(d), "mlflow": bool(_alive(info.get("pid")) and is_up(info["uri"])),
            "uri": info.get("uri"), "workers": info.get("workers"), "pid": info.get("pid"),
            "postgres": pg.running(), "postgres_port": pg.port if pg.state.exists() else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leviathan.tracking.service", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "status", "env"])
    ap.add_argument("--dir", required=True, help="folder for PostgreSQL, artifacts and logs")
    ap.add_argument("--host", default="127.0.0.1",
                    help="interface to serve on (0.0.0.0: reachable from compute nodes)")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=4, help="MLflow server worker processes")
    a = ap.parse_args(argv)
    from leviathan.logs import setup_logging

    setup_logging()
    try:
        if a.action == "up":
            up(a.dir, host=a.host, port=a.port, workers=a.workers)
        elif a.action == "down":
            down(a.dir)
        elif a.action == "env":
            info = _info(Path(a.dir).absolute())
            if "public_uri" not in info:
                log.error(f"error: {a.dir}: no tracking service set up here (run `up` first)")
                return 1
            print(f"export MLFLOW_TRACKING_URI={info['public_uri']}")
        else:
            st = status(a.dir)
            print(json.dumps(st, indent=1))
            return 0 if st["mlflow"] and st["postgres"] else 1
    except LeviathanError as e:  # PostgresError, TrackingUnreachable; anything else: traceback
        log.error(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
