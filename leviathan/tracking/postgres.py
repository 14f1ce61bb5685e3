"""A PostgreSQL server of the project's own (Debian's `postgresql` package) in a folder the user
names: the database behind the production MLflow server (leviathan.tracking.service).

    <dir>/pgdata/        the database cluster (initdb), owned by the user postgres runs as
    <dir>/pgsocket/      its Unix socket (trust: only that user and root can reach it)
    <dir>/pgpass         role `mlflow`'s password for TCP (mode 600); libpq reads it through
                         PGPASSFILE, so no password appears on a command line
    <dir>/postgres.json  the port; <dir>/postgres.log the server's log

PostgreSQL refuses to run as root: as root, initdb and pg_ctl run as the `postgres` system user
(`runuser`), which must be able to reach <dir>. It listens on 127.0.0.1 only: its one client is
the MLflow server beside it.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from leviathan.errors import LeviathanError

PG_USER = "postgres"  # the system user postgres runs as when we are root
DB = ROLE = "mlflow"
CONNECTIONS_PER_WORKER = 30  # the MLflow server's SQLAlchemy pool (10) + overflow (20) per worker


class PostgresError(LeviathanError, RuntimeError):
    """PostgreSQL is missing, or a step failed; the message says which and where its log is."""


def pg_bin() -> Path:
    """The folder with pg_ctl: $LEVIATHAN_PG_BIN, the newest /usr/lib/postgresql/*/bin, PATH."""
    env = os.environ.get("LEVIATHAN_PG_BIN")
    found = [Path(env)] if env else sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found and shutil.which("pg_ctl"):
        found = [Path(shutil.which("pg_ctl")).parent]
    if not found or not (found[-1] / "pg_ctl").exists():
        raise PostgresError("PostgreSQL not found: install Debian's `postgresql` package "
                            "(apt-get install postgresql) or set LEVIATHAN_PG_BIN to the folder "
                            "that holds pg_ctl")
    return found[-1]


@dataclass
class Postgres:
    dir: Path
    max_connections: int = 200

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).absolute()
        self.data, self.socket = self.dir / "pgdata", self.dir / "pgsocket"
        self.pgpass, self.log = self.dir / "pgpass", self.dir / "postgres.log"
        self.state = self.dir / "postgres.json"

    @property
    def port(self) -> int:
        if not self.state.exists():
            raise PostgresError(f"{self.dir}: no PostgreSQL initialised here (run `up` first)")
        return int(json.loads(self.state.read_text())["port"])

    @property
    def uri(self) -> str:
        """SQLAlchemy URI for MLflow; the password comes from PGPASSFILE (`env()`). The driver is
        named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, we install psycopg2."""
        return f"postgresql+psycopg2://{ROLE}@127.0.0.1:{self.port}/{DB}"

    def env(self) -> dict[str, str]:
        return {"PGPASSFILE": str(self.pgpass)}

    # ------------------------------------------------------------ running commands as the owner
    def _cmd(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", PG_USER, "--", *args]
        return list(args)

    def _run(self, what: str, *args: str, input: str | None = None) -> str:
        out = subprocess.run(self._cmd(*args), capture_output=True, text=True, input=input,
                             timeout=300)
        if out.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresError(f"PostgreSQL {what} failed (exit {out.returncode}) in {self.dir}:"
                                f"\n{(out.stdout + out.stderr).strip()[-2000:]}\n{tail}")
        return out.stdout

    def _own(self, *paths: Path) -> None:
        if os.geteuid() == 0:
            for p in paths:
                shutil.chown(p, PG_USER, PG_USER)

    # ------------------------------------------------------------ lifecycle
    def init(self, port: int) -> bool:
        """initdb once (False when already initialised): trust on the socket, scram over TCP,
        role and database `mlflow` created at the first start."""
        if (self.data / "PG_VERSION").exists():
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        for d in (self.data, self.socket):
            d.mkdir(mode=0o700, exist_ok=True)
        self.log.touch()
        self._own(self.data, self.socket, self.log)
        if os.geteuid() == 0 and subprocess.run(
                self._cmd("test", "-w", str(self.data)), capture_output=True).returncode != 0:
            raise PostgresError(f"{self.dir}: the `{PG_USER}` user (PostgreSQL refuses to run as "
                                "root) cannot reach this folder: a parent folder is not "
                                "searchable by it (e.g. mode 700). Choose one it can reach, "
                                "e.g. under /var/tmp or /srv.")
        self._run("initdb", str(pg_bin() / "initdb"), "-D", str(self.data), "-U", PG_USER,
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\ninclude_if_exists = 'leviathan.conf'  # rewritten at each start\n")
        password = secrets.token_urlsafe(24)
        fd = os.open(self.pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:*:{DB}:{ROLE}:{password}\n")
        self.state.write_text(json.dumps({"port": port}))
        return True

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        return subprocess.run(self._cmd(str(pg_bin() / "pg_ctl"), "status", "-D", str(self.data)),
                              capture_output=True).returncode == 0

    def start(self) -> None:
        """Start (if stopped) and make sure role and database `mlflow` exist."""
        if not self.running():
            conf = self.data / "leviathan.conf"
            conf.write_text(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                            f"unix_socket_directories = '{self.socket}'\n"
                            f"max_connections = {self.max_connections}\n")
            self._own(conf)
            self._run("start", str(pg_bin() / "pg_ctl"), "start", "-D", str(self.data), "-l",
                      str(self.log), "-w", "-t", "120")
        psql = [str(pg_bin() / "psql"), "-h", str(self.socket), "-p", str(self.port), "-U",
                PG_USER, "-v", "ON_ERROR_STOP=1", "-tA"]
        if not self._run("role check", *psql, "-d", "postgres", "-c",
                         f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'").strip():
            password = self.pgpass.read_text().strip().rsplit(":", 1)[1]
            self._run("create role", *psql, "-d", "postgres",
                      input=f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}';\n")
        if not self._run("database check", *psql, "-d", "postgres", "-c",
                         f"SELECT 1 FROM pg_database WHERE datname = '{DB}'").strip():
            self._run("create database", *psql, "-d", "postgres", "-c",
                      f"CREATE DATABASE {DB} OWNER {ROLE}")

    def stop(self) -> bool:
        """Stop it (fast shutdown: open transactions roll back); False when it was not running."""
        if not self.running():
            return False
        self._run("stop", str(pg_bin() / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast",
                  "-w", "-t", "120")
        return True
