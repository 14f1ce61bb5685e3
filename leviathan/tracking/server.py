"""Start, find and check an MLflow tracking server.

The platform logs over HTTP to one `mlflow server` (SQLite backend by default; a cluster runs
PostgreSQL with several workers, leviathan.tracking.service), so many concurrent jobs have a
single writer. `ensure_local_server` starts one on loopback when nothing is listening there;
`check_reachable` fails fast with a message that names the URI (the sweep driver uses it before
submitting); `probe_at_start` is a job's gentler version.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from leviathan.errors import LeviathanError

log = logging.getLogger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class TrackingUnreachable(LeviathanError, RuntimeError):
    """The configured MLflow tracking URI does not answer."""


class ServerFailed(LeviathanError, RuntimeError):
    """An MLflow server started here exited or did not come up; the message names its log."""


def is_http(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def is_local(uri: str) -> bool:
    return is_http(uri) and (urlparse(uri).hostname or "") in LOCAL_HOSTS


def is_up(uri: str, timeout: float = 2.0) -> bool:
    """True when `uri`'s /health endpoint answers OK."""
    from leviathan.tracking.credentials import ssl_context

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout,
                                    context=ssl_context()) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_reachable(uri: str, timeout: float = 5.0, key: str = "tracking.uri") -> None:
    """Raise TrackingUnreachable naming `uri` (and the config key) when it does not answer."""
    if not is_http(uri):
        return  # file:// or sqlite:// stores are local paths, nothing to reach
    deadline = time.monotonic() + timeout
    while True:
        if is_up(uri, timeout=min(2.0, timeout)):
            return
        if time.monotonic() >= deadline:
            raise TrackingUnreachable(
                f"MLflow tracking server {uri} ({key}) is not reachable: nothing answered at "
                f"{uri.rstrip('/')}/health within {timeout:.0f}s. Start one with `make dashboard` "
                f"or point {key} at a running server."
            )
        time.sleep(0.25)


def probe_at_start(uri: str, *, connect_timeout_s: float, start_timeout_s: float) -> bool:
    """A training job's start: True when `uri` answers within connect_timeout_s and takes the
    job's login. Otherwise raise (TrackingUnreachable, TrackingAuthError) when start_timeout_s is
    0, else say that training starts anyway (leviathan.tracking.run_tracker opens the run in the
    background; what the server refuses waits in the outbox) and return False."""
    from leviathan.tracking.credentials import TrackingAuthError, check_access

    try:
        check_reachable(uri, timeout=connect_timeout_s)
        check_access(uri, timeout=connect_timeout_s)
        return True
    except (TrackingUnreachable, TrackingAuthError) as e:
        if start_timeout_s <= 0:
            raise
        log.info(f"{e}\nTraining starts anyway: params, tags and metrics wait in the run folder's "
                 f"outbox and the MLflow run is opened as soon as {uri} answers (tried for "
                 f"tracking.start_timeout_s={start_timeout_s:.0f}s).")
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LocalServer:
    """A `mlflow server` child process on loopback."""

    uri: str
    store_dir: Path
    process: subprocess.Popen | None  # None when an already running server was reused
    log_path: Path | None = None

    def stop(self) -> None:
        """Stop the server's whole process group (the `mlflow` CLI, its uvicorn workers)."""
        if self.process is not None:
            stop_group(self.process)


def stop_group(proc: subprocess.Popen | int, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL, to the process group `proc` leads (start_new_session=True): a
    signal to the `mlflow` CLI alone leaves its uvicorn children running. `proc` may be the
    leader's pid (a server another process started, e.g. `make demo`'s, which keeps running)."""
    import signal

    pid = proc if isinstance(proc, int) else proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        if not isinstance(proc, int):
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + timeout  # wait for the leader and its children
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def pid_alive(pid: Any) -> bool:
    """True while process `pid` runs; a zombie (dead, not reaped yet: its parent, e.g. a killed
    sweep driver, is gone) is not alive."""
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):  # gone, or no pid recorded
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux), or it exited meanwhile
        return True


def _mlflow_executable() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


def server_command(store: Path, host: str, port: int, backend_uri: str | None = None,
                   workers: int = 1, app_name: str | None = None,
                   tls: tuple[str, str] | None = None) -> list[str]:
    """`mlflow server` over a store folder: SQLite backend (or `backend_uri`) + artifacts;
    `app_name="basic-auth"`: MLflow's login and permissions (leviathan.tracking.service);
    `tls=(certfile, keyfile)`: https, through uvicorn's own options.

    uvicorn's defaults do not suit many writers: an idle connection is closed after 5 s, the
    writers' flush interval, so a send can race the close; and with several workers a worker
    busy for 5 s misses the supervisor's health check and is killed with every request it holds.
    """
    backend = backend_uri or f"sqlite:///{store / 'mlflow.db'}"
    uvicorn = "--timeout-keep-alive 75" + (" --timeout-worker-healthcheck 60" if workers > 1
                                           else "")
    if tls:
        uvicorn += f" --ssl-certfile {tls[0]} --ssl-keyfile {tls[1]}"
    return [*_mlflow_executable(), "server", "--backend-store-uri", backend,
            "--artifacts-destination", str(store / "artifacts"), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers),
            "--uvicorn-opts", uvicorn, *(["--app-name", app_name] if app_name else [])]


def server_env(store: Path, **extra: str) -> dict[str, str]:
    """The server's environment: MLFLOW_HOME in the store; unless the environment says
    otherwise, MLflow 3's GenAI job runner (huey consumers for scorers and trace roll-ups: seven
    more processes, ~1.4 GB; tracking needs none) and its usage telemetry (calls home; a
    cluster's nodes are often offline) switched off."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
            **os.environ, "MLFLOW_HOME": str(store), **extra}


def start_server(
    store_dir: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    backend_uri: str | None = None,
    timeout: float = 90.0,
    workers: int = 1,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    app_name: str | None = None,
    tls: tuple[str, str] | None = None,
) -> LocalServer:
    """Start `mlflow server` (SQLite store, or `backend_uri`) under `store_dir`; wait for it.

    A server bound to every interface (0.0.0.0) is probed, and named in the result, as
    127.0.0.1. `env` adds to the server's environment, `extra_args` to its command line;
    `app_name` and `tls`: server_command."""
    store = Path(store_dir).resolve()
    store.mkdir(parents=True, exist_ok=True)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    port = port or free_port(local)
    uri = f"{'https' if tls else 'http'}://{local}:{port}"
    log_path = store / f"server-{port}.log"
    cmd = server_command(store, host, port, backend_uri, workers=workers, app_name=app_name,
                         tls=tls) + list(extra_args or [])
    env = server_env(store, **(env or {}))
    out = open(log_path, "ab")  # noqa: SIM115 - the child process owns it
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(
                f"mlflow server exited with code {proc.returncode}; see {log_path}:\n"
                + log_path.read_text(errors="replace")[-3000:]
            )
        if is_up(uri, timeout=1.0):
            return LocalServer(uri=uri, store_dir=store, process=proc, log_path=log_path)
        time.sleep(0.3)
    stop_group(proc)
    raise ServerFailed(
        f"mlflow server on {uri} did not come up within {timeout:.0f}s; see {log_path}"
    )


def ensure_local_server(uri: str, store_dir: str | Path) -> LocalServer:
    """Reuse the server at `uri` if it answers; start one there when `uri` is local and silent.

    A remote URI that does not answer is an error (TrackingUnreachable), never started here.
    """
    if is_up(uri):
        return LocalServer(uri=uri, store_dir=Path(store_dir), process=None)
    if not is_local(uri):
        check_reachable(uri)
    parsed = urlparse(uri)
    log.info(f"No MLflow server at {uri}: starting one (store {store_dir}).")
    return start_server(store_dir, host=parsed.hostname or "127.0.0.1", port=parsed.port or 5000)
