"""Logging in to a tracking server that asks for it (`make tracking-server` off loopback: MLflow's
basic-auth app), without the secret in any config or record.

MLflow's clients read MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or
MLFLOW_TRACKING_TOKEN) at each request. `use_credentials` fills them for this process, and so
for the jobs it starts, from, in order: `tracking.credentials_file` (lines `username=...` and
`password=...`, or the variables' own names; mode 0600, checked), the `user:password@` of
tracking.uri, else what the environment already holds. It returns the URI without userinfo,
which is the one every client, log line and record uses. `check_access` is the sweep's
pre-flight: an authenticated request that tells a missing login (401), a refused one (401) and
one without the right to read (403) apart, each with its fix, before anything is submitted.

TLS: an https:// server's certificate is checked against MLFLOW_TRACKING_SERVER_CERT_PATH when
set (MLflow's clients read the same variable), else the system's CAs.
"""

from __future__ import annotations

import base64
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from leviathan.errors import LeviathanError
from leviathan.redaction import MASK, register, strip_userinfo

USER, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
TOKEN = "MLFLOW_TRACKING_TOKEN"
CERT = "MLFLOW_TRACKING_SERVER_CERT_PATH"
FILE_KEYS = {"username": USER, "user": USER, "password": PASSWORD, "token": TOKEN,
             USER.lower(): USER, PASSWORD.lower(): PASSWORD, TOKEN.lower(): TOKEN}
USER_HINT = ("the server's admin creates one with `python -m leviathan.tracking.service user "
             "--dir <server folder> --name <user> --role writer` (writes a 0600 credentials file)")
_source = ["the environment"]  # where this process's login came from (for messages)


class TrackingAuthError(LeviathanError, RuntimeError):
    """The tracking server asks for a login this process does not have, or refuses it."""


def read_credentials_file(path: str | os.PathLike,
                          key: str = "tracking.credentials_file") -> dict[str, str]:
    """{MLFLOW_TRACKING_*: value} from a 0600 file of `name=value` lines (`#` comments,
    `export ` and quotes allowed); names: username/password/token or the variables' names."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TrackingAuthError(f"{key}={path}: no such file")
    mode = p.stat().st_mode & 0o777
    if mode & 0o077:
        raise TrackingAuthError(f"{key}={path}: readable by others (mode {mode:04o}) and it holds "
                                f"a login; `chmod 600 {path}`")
    out: dict[str, str] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.removeprefix("export ").partition("=")
        env = FILE_KEYS.get(name.strip().lower())
        if not eq or env is None:
            raise TrackingAuthError(f"{key}={path}, line {n}: expected username=..., "
                                    f"password=... or token=... (or {USER}=... etc.)")
        out[env] = value.strip().strip("'\"")
    if PASSWORD not in out and TOKEN not in out:
        raise TrackingAuthError(f"{key}={path}: no password= (or token=) line")
    return out


def use_credentials(uri: str, credentials_file: str | None = None,
                    key: str = "tracking.credentials_file") -> str:
    """Set this process's MLflow login (credentials_file, else the URI's userinfo, else the
    environment as it is) and return `uri` without userinfo. Registers the secret with
    leviathan.redaction, so no log line shows it."""
    parsed = urlparse(uri)
    if credentials_file:
        os.environ.update(read_credentials_file(credentials_file, key))
        _source[0] = f"{key}={credentials_file}"
    elif parsed.username not in (None, MASK):  # a masked URI (a record's) carries no login
        os.environ[USER] = unquote(parsed.username)
        if parsed.password is not None:
            os.environ[PASSWORD] = unquote(parsed.password)
            register(unquote(parsed.password))
            register(parsed.password)
        _source[0] = "the user:password@ of tracking.uri"
    register(os.environ.get(PASSWORD))
    register(os.environ.get(TOKEN))
    return strip_userinfo(uri)


def login(trk: Any) -> Any:
    """A TrackingConfig whose uri has no userinfo, after use_credentials set this process's
    login (nothing to do when tracking is off)."""
    if trk.enabled:
        trk.uri = use_credentials(trk.uri, trk.credentials_file)
    return trk


def ssl_context() -> ssl.SSLContext | None:
    """Certificate checking as MLflow's clients do it (MLFLOW_TRACKING_SERVER_CERT_PATH, or
    MLFLOW_TRACKING_INSECURE_TLS=true for none)."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # noqa: S323 - the user asked for it
    cert = os.environ.get(CERT)
    return ssl.create_default_context(cafile=cert) if cert else None


def auth_headers() -> dict[str, str]:
    """The Authorization header MLflow's clients would send (basic, or a bearer token)."""
    if os.environ.get(USER) and os.environ.get(PASSWORD) is not None:
        pair = f"{os.environ[USER]}:{os.environ[PASSWORD]}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    if os.environ.get(TOKEN):
        return {"Authorization": f"Bearer {os.environ[TOKEN]}"}
    return {}


def check_access(uri: str, key: str = "tracking.uri", timeout: float = 10.0) -> str | None:
    """Read access to `uri` with this process's login: the user name (None: the server asks for
    no login), or TrackingAuthError saying what is wrong and how to fix it."""
    if urlparse(uri).scheme not in ("http", "https"):
        return None
    url = strip_userinfo(uri).rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    headers = auth_headers()
    user = os.environ.get(USER) if headers else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout, context=ssl_context()):
            return user
    except urllib.error.HTTPError as e:
        if e.code == 401 and not headers:
            raise TrackingAuthError(
                f"MLflow tracking server {strip_userinfo(uri)} ({key}) asks for a login (401) and "
                f"none is set: export {USER} and {PASSWORD}, or set tracking.credentials_file="
                f"<a 0600 file with username= and password= lines>; {USER_HINT}") from None
        if e.code == 401:
            raise TrackingAuthError(
                f"MLflow tracking server {strip_userinfo(uri)} ({key}) refused the login of user "
                f"{user!r} from {_source[0]} (401: wrong user name or password): fix {USER}/"
                f"{PASSWORD} or tracking.credentials_file; {USER_HINT}") from None
        if e.code == 403:
            raise TrackingAuthError(forbidden(uri, user, "read its experiments", key)) from None
        return user  # another answer is not about the login; the clients will say what it is


def forbidden(uri: str, user: str | None, what: str, key: str = "tracking.uri") -> str:
    """The message for a 403: who may not do what, and the fix."""
    return (f"MLflow tracking server {strip_userinfo(uri)} ({key}): user {user!r} may not "
            f"{what} (403). A sweep needs a writer: `python -m leviathan.tracking.service user "
            f"--dir <server folder> --name {user or '<user>'} --role writer` (run by the server's "
            "admin) grants it")


def is_denied(e: Exception) -> bool:
    """Whether an MLflow client error is a refused login or permission (401/403)."""
    code = getattr(e, "error_code", None)
    return code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or any(
        f"error code {c} " in str(e) for c in (401, 403))

