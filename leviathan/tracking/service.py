"""`make tracking-server`: MLflow on PostgreSQL with several workers, in a folder you name.

    python -m leviathan.tracking.service up --dir DIR [--host 0.0.0.0] [--port 5000] [--workers 4]
                                        [--no-auth | --auth] [--tls-cert CERT --tls-key KEY]
    python -m leviathan.tracking.service user --dir DIR --name sweep --role writer|reader
    python -m leviathan.tracking.service status --dir DIR     (exit 0: both up)
    python -m leviathan.tracking.service down --dir DIR
    python -m leviathan.tracking.service env --dir DIR        (export MLFLOW_TRACKING_URI=...)

Authentication: a server that binds beyond loopback (--host 0.0.0.0) serves MLflow's basic-auth
app (`mlflow server --app-name basic-auth`): every request needs a login, a user reads what is
logged (default permission READ) but may create, change or delete only what it was granted. The
app runs in MLflow's workspace mode (one workspace, `default`) because only there does creating
an experiment need a grant (the workspace's USE); without it any user may create one. At the
first `up`, DIR gets admin.password (the `admin` user's, generated, mode 0600), flask.secret (CSRF
key, 0600), basic_auth.ini and the user store basic_auth.db. `user` creates a login with the
admin's password: `--role writer` (a sweep's jobs: the role `leviathan-writer`, which may create
experiments and runs and log to every experiment, never delete) or `--role reader` (a viewer: no
grant, reads and nothing else), and writes its credentials file
DIR/users/<name>.credentials (0600), which jobs name in `tracking.credentials_file` (or export
MLFLOW_TRACKING_USERNAME/PASSWORD from it). `--no-auth` serves without (with a warning); `--auth`
turns it on for a loopback server too. A loopback server without --auth (`make dashboard`, `make
demo`) asks for no login.

TLS: `--tls-cert/--tls-key` serve https through uvicorn; jobs check the certificate against
MLFLOW_TRACKING_SERVER_CERT_PATH (a self-signed one: its own file). Behind a reverse proxy
(nginx, Caddy) that terminates TLS, keep --host 127.0.0.1 --auth and point jobs at the proxy.

DIR holds the PostgreSQL cluster (leviathan.tracking.postgres), the artifacts, mlflow.pid,
service.json and the server's log (server-<port>.log). `up` is idempotent and restarts what is
down. The server runs MLflow's default uvicorn with `--workers` processes, each with a
SQLAlchemy pool of 10 connections + 20 overflow (PostgreSQL's max_connections is sized to
match); the GenAI job runner is off. This is what a cluster needs once more than a few jobs log
at once; SQLite (one writer, `make dashboard`, `make demo`) stays the default for a laptop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.tracking.postgres import CONNECTIONS_PER_WORKER, Postgres

log = logging.getLogger(__name__)


class ServiceError(LeviathanError, RuntimeError):
    """A service command that cannot be done here (no server with authentication, a bad role)."""

POOL_SIZE, MAX_OVERFLOW = 10, 20  # per worker: CONNECTIONS_PER_WORKER in all
LOOPBACK = ("127.0.0.1", "localhost", "::1")
AUTH_APP, ADMIN = "basic-auth", "admin"
# each role's grants (resource type, pattern, permission) in MLflow's default workspace; a reader
# has none: default_permission (READ) lets it read, and creates nothing (READ is not USE)
ROLES = {"writer": (("workspace", "*", "USE"), ("experiment", "*", "EDIT")), "reader": ()}
WRITER_ROLE = "leviathan-writer"


def _alive(pid: int | None) -> bool:
    """True while process `pid` runs. A zombie is not alive: the server that `up` started from
    this process (a test, a script) stays one after `down` stops it until it is reaped, and
    `down` would otherwise wait out its whole grace period for it."""
    from leviathan.sweep.launcher import pid_alive

    return bool(pid) and pid_alive(pid)


def _info(d: Path) -> dict[str, Any]:
    path = d / "service.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _secret_file(path: Path) -> str:
    """The secret in `path`, generated (and written with mode 0600) the first time."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def auth_env(d: Path) -> dict[str, str]:
    """The basic-auth app's settings: the user store and default permission in basic_auth.ini
    (written at every call), the admin's password and the CSRF key from their 0600 files, and
    workspace mode. In it an experiment is created only with the workspace's USE grant (a
    writer's); grant_default_workspace_access gives a user without a grant the default
    permission (READ) in the one workspace, so a reader reads and creates nothing."""
    ini = d / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{d / 'basic_auth.db'}\n"
                   f"admin_username = {ADMIN}\ngrant_default_workspace_access = true\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_ENABLE_WORKSPACES": "true",
            "MLFLOW_AUTH_ADMIN_PASSWORD": _secret_file(d / "admin.password"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret_file(d / "flask.secret")}


def wants_auth(host: str, auth: bool | None) -> bool:
    """Authentication unless asked otherwise: on for any server beyond loopback."""
    return host not in LOOPBACK if auth is None else auth


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
       timeout_s: float = 300.0, auth: bool | None = None,
       tls: tuple[str, str] | None = None) -> dict[str, Any]:
    """Start PostgreSQL and the MLflow server over it (whatever is not running yet); with
    authentication when it binds beyond loopback, or `auth=True` (module docstring)."""
    from leviathan.tracking.server import free_port, is_up, start_server

    d = Path(d).absolute()
    info = _info(d)
    if _alive(info.get("pid")) and is_up(info["uri"]):
        log.info(f"MLflow on PostgreSQL already running: {info['uri']} (pid {info['pid']})")
        return info
    secure = wants_auth(host, auth)
    if not secure and host not in LOOPBACK:
        log.warning(f"WARNING: serving on {host}:{port} WITHOUT authentication (--no-auth): "
                    "anyone who reaches this port can read, change and delete every run.")
    pg = Postgres(d, max_connections=workers * CONNECTIONS_PER_WORKER + 20)
    if pg.init(port=free_port()):
        log.info(f"initialised PostgreSQL in {pg.data}")
    pg.start()
    log.info(f"PostgreSQL running on 127.0.0.1:{pg.port} (log {pg.log})")
    env = {**pg.env(), "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(POOL_SIZE),
           "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(MAX_OVERFLOW),
           **(auth_env(d) if secure else {})}
    server = start_server(d, host=host, port=port, backend_uri=pg.uri, workers=workers,
                          env=env, extra_args=_allowed_hosts(host), timeout=timeout_s,
                          app_name=AUTH_APP if secure else None, tls=tls)
    scheme = "https" if tls else "http"
    public = f"{scheme}://{socket.getfqdn()}:{port}" if _allowed_hosts(host) else server.uri
    info = {"uri": server.uri, "public_uri": public, "host": host, "port": port,
            "workers": workers, "pid": server.process.pid, "backend": pg.uri,
            "log": str(server.log_path), "auth": secure,
            "admin_password_file": str(d / "admin.password") if secure else None}
    (d / "service.json").write_text(json.dumps(info, indent=1))
    (d / "mlflow.pid").write_text(f"{server.process.pid}\n")
    log.info(f"MLflow on PostgreSQL: {server.uri} ({workers} workers, pid {server.process.pid}, "
             f"log {server.log_path}). Jobs: tracking.uri={public}")
    if secure:
        log.info(f"Authentication on (MLflow basic-auth; admin password in {d / 'admin.password'}"
                 f"). A login for the sweep's jobs: python -m leviathan.tracking.service user "
                 f"--dir {d} --name sweep --role writer; for a viewer: --role reader.")
    return info


@contextlib.contextmanager
def _as_admin(password: str):
    """MLflow clients in this block log in as the server's admin."""
    from leviathan.tracking.credentials import PASSWORD, USER

    saved = {k: os.environ.get(k) for k in (USER, PASSWORD)}
    os.environ[USER], os.environ[PASSWORD] = ADMIN, password
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def add_user(d: str | Path, name: str, role: str = "reader") -> Path:
    """Create (or give a new password to) login `name` on the running server in `d`, with
    `role` (ROLES); write its credentials file d/users/<name>.credentials (0600)."""
    d = Path(d).absolute()
    info = _info(d)
    if not info.get("auth"):
        raise ServiceError(f"{d}: no server with authentication set up here (run `up` with "
                           "--host beyond loopback, or --auth, first)")
    return create_login(info["uri"], (d / "admin.password").read_text().strip(), name, role,
                        d / "users")


def _set_role(client, name: str, role: str) -> None:
    """Give login `name` exactly `role`'s grants: the role WRITER_ROLE (created with ROLES'
    grants the first time) assigned to a writer, taken from anyone else."""
    from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

    found = [r for r in client.list_roles(DEFAULT_WORKSPACE_NAME) if r.name == WRITER_ROLE]
    if found:
        writer = found[0]
    else:
        writer = client.create_role(DEFAULT_WORKSPACE_NAME, WRITER_ROLE,
                                    "leviathan: create experiments and runs, log; never delete")
        for grant in ROLES["writer"]:
            client.add_role_permission(writer.id, *grant)
    has = any(r.id == writer.id for r in client.list_user_roles(name))
    if role == "writer" and not has:
        client.assign_role(name, writer.id)
    elif role != "writer" and has:
        client.unassign_role(name, writer.id)


def create_login(uri: str, admin_password: str, name: str, role: str, users: Path) -> Path:
    """add_user on the basic-auth server at `uri`, as its admin: the credentials file
    users/<name>.credentials (0600; `username=` and `password=` lines, a generated password)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    if role not in ROLES:
        raise ServiceError(f"--role {role}: expected one of {', '.join(ROLES)}")
    password = secrets.token_urlsafe(18)
    with _as_admin(admin_password):
        client = AuthServiceClient(uri)
        try:
            client.create_user(name, password)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise ServiceError(f"creating user {name!r} on {uri}: {e}") from e
            client.update_user_password(name, password)  # again: a new password, same user
            with contextlib.suppress(MlflowException):  # a grant older versions gave a writer
                client.revoke_user_permission(name, "experiment", "*")
        _set_role(client, name, role)
    users.mkdir(mode=0o700, exist_ok=True)
    path = users / f"{name}.credentials"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"username={name}\npassword={password}\n")
    log.info(f"user {name!r} ({role}) on {uri}: credentials in {path} (mode 0600). "
             f"Jobs: tracking.credentials_file={path}, or export MLFLOW_TRACKING_USERNAME and "
             "MLFLOW_TRACKING_PASSWORD from it.")
    return path


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
            "auth": info.get("auth", False),
            "postgres": pg.running(), "postgres_port": pg.port if pg.state.exists() else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leviathan.tracking.service", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "status", "env", "user"])
    ap.add_argument("--dir", required=True, help="folder for PostgreSQL, artifacts and logs")
    ap.add_argument("--host", default="127.0.0.1",
                    help="interface to serve on (0.0.0.0: reachable from compute nodes)")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=4, help="MLflow server worker processes")
    ap.add_argument("--auth", dest="auth", action="store_true", default=None,
                    help="up: authentication even on loopback (on anyway beyond loopback)")
    ap.add_argument("--no-auth", dest="auth", action="store_false",
                    help="up: serve beyond loopback WITHOUT authentication (warns)")
    ap.add_argument("--tls-cert", help="up: serve https with this certificate (PEM)")
    ap.add_argument("--tls-key", help="up: the certificate's private key (PEM)")
    ap.add_argument("--name", help="user: the login to create (e.g. sweep)")
    ap.add_argument("--role", choices=list(ROLES), default="reader",
                    help="user: writer (a sweep's jobs) or reader (a viewer)")
    a = ap.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    if a.action == "user" and not a.name:
        ap.error("user: --name is required")
    from leviathan.logs import setup_logging

    setup_logging()
    try:
        if a.action == "up":
            up(a.dir, host=a.host, port=a.port, workers=a.workers, auth=a.auth,
               tls=(a.tls_cert, a.tls_key) if a.tls_cert else None)
        elif a.action == "user":
            add_user(a.dir, a.name, a.role)
        elif a.action == "down":
            down(a.dir)
        elif a.action == "env":
            info = _info(Path(a.dir).absolute())
            if "public_uri" not in info:
                log.error(f"error: {a.dir}: no tracking service set up here (run `up` first)")
                return 1
            print(f"export MLFLOW_TRACKING_URI={info['public_uri']}")
            if info.get("auth"):
                print(f"# login: tracking.credentials_file={Path(a.dir).absolute()}/users/<name>"
                      ".credentials (`user --name <name> --role writer` creates it)")
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
