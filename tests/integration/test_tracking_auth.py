"""A tracking server with authentication (`make tracking-server` beyond loopback: MLflow's
basic-auth app), with real servers: who gets in and what they may do, a smoke sweep whose
jobs log in from the environment, a refused login that stops the sweep before anything is
submitted, and no secret in any record the sweep and its job leave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import REPO

from leviathan.tracking.credentials import PASSWORD, USER, read_credentials_file

pytestmark = [pytest.mark.integration]


def _get(uri: str, path: str, login: dict | None = None) -> int:
    import base64

    req = urllib.request.Request(uri + path)
    if login:
        pair = f"{login[USER]}:{login[PASSWORD]}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def as_user(monkeypatch):
    """as_user(credentials_file): this process's MLflow clients log in as that user."""
    def login(path: Path):
        for k, v in read_credentials_file(path).items():
            monkeypatch.setenv(k, v)

    def admin(password: str):
        monkeypatch.setenv(USER, "admin")
        monkeypatch.setenv(PASSWORD, password)
    login.admin = admin
    return login


def test_unauthenticated_request_gets_401(auth_server):
    uri = auth_server["uri"]
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(uri, search) == 401
    assert _get(uri, search, {USER: "sweep", PASSWORD: "not-the-password"}) == 401
    assert _get(uri, search, read_credentials_file(auth_server["reader"])) == 200
    assert _get(uri, "/health") == 200  # liveness stays open (status, the sweep's probe)
    d = auth_server["dir"]
    for name in ("admin.password", "flask.secret", "users/sweep.credentials",
                 "users/viewer.credentials"):
        assert (d / name).stat().st_mode & 0o777 == 0o600, name


def test_reader_lists_runs_and_cannot_delete_one(auth_server, as_user):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = auth_server["uri"]
    admin = (auth_server["dir"] / "admin.password").read_text().strip()
    as_user.admin(admin)
    a = MlflowClient(uri)
    exp = a.create_experiment("rbac")  # not the writer's own: only the role's grant applies
    as_user(auth_server["writer"])
    c = MlflowClient(uri)
    run_id = c.create_run(exp).info.run_id
    c.log_metric(run_id, "m", 1.0)
    with pytest.raises(MlflowException, match="403"):  # a writer logs, never deletes
        c.delete_run(run_id)

    as_user(auth_server["reader"])
    v = MlflowClient(uri)
    assert run_id in [r.info.run_id for r in v.search_runs([exp])]
    assert v.get_metric_history(run_id, "m")[0].value == 1.0
    for attempt in (lambda: v.delete_run(run_id), lambda: v.create_run(exp),
                    lambda: v.log_metric(run_id, "m", 2.0)):
        with pytest.raises(MlflowException) as err:
            attempt()
        assert err.value.error_code == "PERMISSION_DENIED" and "403" in str(err.value)
    as_user(auth_server["writer"])
    assert MlflowClient(uri).get_run(run_id).info.lifecycle_stage == "active"


def test_reader_cannot_create_an_experiment_a_writer_can(auth_server, as_user):
    """A reader reads and nothing else: MLflow lets any user create an experiment (and own
    it) unless the server says who may create; here only a writer may. A writer made a
    reader again (`service user --role reader`) loses that right too."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from leviathan.tracking.service import create_login

    uri = auth_server["uri"]
    as_user(auth_server["writer"])
    MlflowClient(uri).create_experiment("writers-own")
    as_user(auth_server["reader"])
    with pytest.raises(MlflowException) as err:
        MlflowClient(uri).create_experiment("readers-own")
    assert err.value.error_code == "PERMISSION_DENIED" and "403" in str(err.value)
    assert MlflowClient(uri).get_experiment_by_name("writers-own") is not None  # still reads
    admin = (auth_server["dir"] / "admin.password").read_text().strip()
    users = auth_server["dir"] / "users"
    as_user(create_login(uri, admin, "demoted", "writer", users))
    MlflowClient(uri).create_experiment("before-demotion")
    as_user(create_login(uri, admin, "demoted", "reader", users))
    with pytest.raises(MlflowException, match="403"):
        MlflowClient(uri).create_experiment("after-demotion")
    assert MlflowClient(uri).get_experiment_by_name("readers-own") is None


SMOKE = ["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]", "~grid.arms.leviathan",
         "grid.tokens=[1024]", "trainer.warmup_steps=1"]


def _no_login_env() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in (USER, PASSWORD, "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI")}


def _sweep(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """The sweep CLI with exactly `env` (no login of this process's leaks in)."""
    return subprocess.run([sys.executable, "-m", "leviathan.sweep", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env=env)


def _shared_experiment(auth_server, name: str = "leviathan") -> None:
    """The experiment as the admin creates it for a team (a writer may create it too; a
    reader may not)."""
    from mlflow.tracking import MlflowClient

    admin = {USER: "admin", PASSWORD: (auth_server["dir"] / "admin.password").read_text().strip()}
    saved = {k: os.environ.get(k) for k in admin}
    os.environ.update(admin)
    try:
        c = MlflowClient(auth_server["uri"])
        if c.get_experiment_by_name(name) is None:
            c.create_experiment(name)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.mark.slow
def test_wrong_or_missing_login_stops_the_sweep_before_submitting(auth_server, tmp_path):
    uri = auth_server["uri"]
    _shared_experiment(auth_server)
    common = [*SMOKE, f"paths.root_dir={tmp_path}", f"tracking.uri={uri}"]
    missing = _sweep([*common, "sweep.name=nologin"], _no_login_env())
    wrong = _sweep([*common, "sweep.name=wrong"],
                   {**_no_login_env(), USER: "sweep", PASSWORD: "wrong-password"})
    reader = _sweep([*common, "sweep.name=reader",
                     f"tracking.credentials_file={auth_server['reader']}"], _no_login_env())
    loose = tmp_path / "loose.credentials"
    loose.write_text(Path(auth_server["writer"]).read_text())
    loose.chmod(0o644)
    open_file = _sweep([*common, "sweep.name=loose", f"tracking.credentials_file={loose}"],
                       _no_login_env())
    for out, says in ((missing, ["asks for a login (401)", USER, "tracking.credentials_file",
                                 "leviathan.tracking.service user"]),
                      (wrong, ["refused the login of user 'sweep'", "401", USER]),
                      (reader, ["user 'viewer' may not", "403", "--role writer"]),
                      (open_file, ["readable by others", "chmod 600"])):
        text = out.stdout + out.stderr
        assert out.returncode != 0, text[-3000:]
        for s in says:
            assert s in text, (s, text[-3000:])
        assert "wrong-password" not in text and "Traceback" not in text
    for name in ("nologin", "wrong", "reader", "loose"):  # nothing was submitted
        manifest = tmp_path / "sweeps" / name / "manifest.json"
        assert not manifest.exists() or json.loads(manifest.read_text())["jobs"] == {}
        jobs = tmp_path / "scratch" / "submitit" / name
        assert not jobs.exists() or not [p for p in jobs.rglob("*") if p.is_file()]


def _records(uri: str, run) -> str:
    """Everything a reader of the MLflow run sees of it: params, tags, its artifacts' text (all
    of them, folders included, in one download: a file at a time costs seconds each against
    the basic-auth server, which checks the password hash at every request)."""
    import tempfile

    from mlflow.artifacts import download_artifacts

    parts = [json.dumps(run.data.params), json.dumps(run.data.tags)]
    with tempfile.TemporaryDirectory() as tmp:
        got = Path(download_artifacts(artifact_uri=run.info.artifact_uri, dst_path=tmp,
                                      tracking_uri=uri))
        files = sorted(p for p in got.rglob("*") if p.is_file())
        assert files, run.info.run_id
        parts += [p.read_text(errors="replace") for p in files]
    return "\n".join(parts)


def _files(*roots: Path, pattern: str = "*") -> dict[Path, str]:
    return {p: p.read_text(errors="replace") for root in roots for p in root.rglob(pattern)
            if p.is_file()}


@pytest.mark.slow
def test_smoke_sweep_logs_in_from_the_environment_and_records_no_secret(auth_server, tmp_path,
                                                                       as_user):
    """A smoke sweep whose driver and job log in from MLFLOW_TRACKING_USERNAME/PASSWORD lands
    every metric once. Canaries in a `*_token` override and a `launcher.setup` line, and the
    password itself, appear in none of: the runs' MLflow params, tags and artifacts (config.yaml,
    environment.json), sweeps/<sweep>/, the job logs, the run folder's records."""
    import secrets

    from helpers.train import one_value_per_step
    from mlflow.tracking import MlflowClient

    uri = auth_server["uri"]
    _shared_experiment(auth_server)
    login = read_credentials_file(auth_server["writer"])
    token, setup = "CANARYtok" + secrets.token_hex(6), "CANARYsetup" + secrets.token_hex(6)
    out = _sweep([*SMOKE, "sweep.name=secure", f"paths.root_dir={tmp_path}",
                  f"tracking.uri={uri}", f"+meta.hf_token={token}",
                  f"launcher.setup=['export HF_TOKEN={setup}']"],
                 {**_no_login_env(), **login})
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-5000:]
    assert "1 finished, 0 failed" in out.stdout

    as_user(auth_server["writer"])
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("leviathan").experiment_id
    runs = c.search_runs([exp], "tags.sweep = 'secure'")
    train = [r for r in runs if r.data.tags.get("kind") == "train"]
    assert len(runs) == 2 and len(train) == 1 and all(r.info.status == "FINISHED" for r in runs)
    run = train[0]
    steps = int(run.data.params["plan.max_steps"])
    for key in ("train/loss", "lr", "tokens_seen"):
        assert len(one_value_per_step(uri, run.info.run_id, key)) == steps, key
    assert run.data.metrics["final/tokens_seen"] == 1024
    assert run.data.params["meta.hf_token"] == "***"  # the key is recorded, its value not
    assert run.data.params["tracking.uri"] == uri

    records = {"mlflow": "\n".join(_records(uri, r) for r in runs), "output": text}
    assert "environment.json" in records["mlflow"] or "env.hash" in records["mlflow"]
    records.update({str(p): t for p, t in _files(tmp_path / "sweeps" / "secure").items()})
    logs = _files(tmp_path / "scratch" / "submitit" / "secure", pattern="*_log.*")
    assert logs and any("finished: val/loss" in t for t in logs.values())
    records.update({str(p): t for p, t in logs.items()})
    run_dir = next((tmp_path / "scratch" / "runs").glob("secure-*"))
    records.update({str(p): t for p, t in _files(run_dir).items()
                    if p.suffix in (".json", ".jsonl", ".yaml", ".txt")})
    assert any(name.endswith("environment.json") or "environment." in name for name in records)
    for secret in (token, setup, login[PASSWORD]):
        leaks = [name for name, t in records.items() if secret in t]
        assert leaks == [], (secret[:6], leaks)


@pytest.mark.slow
def test_login_in_the_uri_reaches_the_job_and_no_record(auth_server, tmp_path, data_dir,
                                                       as_user):
    """tracking.uri=http://sweep:<password>@host and no login in the environment: the training
    job (the real CLI) logs in with it (its run lands) and the password is in no record (its
    output, the run's MLflow params, tags and artifacts, the run folder's records); the records
    keep the URI with `***@`. One job, not a sweep: a sweep's driver and job logging in and
    recording no secret are the test above; the driver's reading of a URI login and its masked
    sweeps/<sweep>/ files, tests/unit/test_redaction.py."""
    from helpers.train import one_value_per_step, run_cli, tiny
    from mlflow.tracking import MlflowClient

    uri = auth_server["uri"]
    _shared_experiment(auth_server, "test-train")  # tiny()'s experiment, the admin's
    login = read_credentials_file(auth_server["writer"])
    with_login = uri.replace("http://", f"http://sweep:{login[PASSWORD]}@")
    proc = run_cli(tiny(data_dir, tmp_path, with_login, "run_name=inuri", steps=4),
                   env=_no_login_env())
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-5000:]
    run_dir = tmp_path / "runs" / "inuri"
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    as_user(auth_server["writer"])
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(one_value_per_step(uri, run_id, "train/loss")) == 4
    assert run.data.params["tracking.uri"] == uri.replace("http://", "http://***@")
    records = {"mlflow": _records(uri, run), "output": out,
               **{str(p): t for p, t in _files(run_dir).items()
                  if p.suffix in (".json", ".jsonl", ".yaml", ".txt")}}
    assert {str(run_dir / "config.yaml"), str(run_dir / "environment.json")} <= set(records)
    assert [name for name, t in records.items() if login[PASSWORD] in t] == []


def test_what_the_server_refuses_waits_in_the_outbox(auth_server, tmp_path, as_user):
    """The job's password is changed while it runs (401 from then on): it loses nothing, the
    refused metrics stay in the run folder's outbox, and the next start with the new login
    sends them, once each."""
    from helpers.train import one_value_per_step

    from leviathan.tracking.run_tracker import RunTracker
    from leviathan.tracking.service import create_login

    uri, users = auth_server["uri"], tmp_path / "users"
    admin = (auth_server["dir"] / "admin.password").read_text().strip()
    kw = {"state_dir": tmp_path / "run", "flush_every_s": 0.2, "retry_backoff_s": 0.2,
          "retry_max_backoff_s": 0.5, "http_timeout_s": 5, "final_flush_timeout_s": 2.0,
          "final_flush_spread_s": 0}
    as_user(create_login(uri, admin, "rotated", "writer", users))
    tr = RunTracker(uri, "rotation", **kw)
    run_id = tr.start(run_name="rotated", tags={"kind": "train"}, wait_s=10)
    tr.log_metrics({"train/loss": 9.0}, step=1)
    assert run_id is not None and tr.flush(deadline_s=30)
    new_login = create_login(uri, admin, "rotated", "writer", users)  # a new password
    for s in range(2, 6):
        tr.log_metrics({"train/loss": 10.0 - s}, step=s)
    assert not tr.finish("FINISHED") and tr.pending == 4  # refused: kept, not dropped
    assert tr.failed_sends >= 1

    as_user(new_login)
    assert one_value_per_step(uri, run_id, "train/loss") == [9.0]
    tr2 = RunTracker(uri, "rotation", **{**kw, "final_flush_timeout_s": 60.0})
    assert tr2.start(wait_s=10) == run_id and tr2.finish("FINISHED")
    assert one_value_per_step(uri, run_id, "train/loss") == [9.0, 8.0, 7.0, 6.0, 5.0]


@pytest.mark.slow
def test_service_up_with_auth_on_postgresql(pg_dir, capsys):
    """`make tracking-server` with authentication (`--auth` forces it on loopback, as a host
    beyond loopback does by default): the admin password generated in a 0600 file, no request
    in without a login, `user` makes a writer's 0600 credentials file that gets in."""
    from leviathan.tracking import service
    from leviathan.tracking.server import free_port

    port = free_port()
    assert service.main(["up", "--dir", str(pg_dir), "--port", str(port), "--workers", "2",
                         "--auth"]) == 0
    st = service.status(pg_dir)
    assert st["mlflow"] and st["postgres"] and st["auth"]
    assert (pg_dir / "admin.password").stat().st_mode & 0o777 == 0o600
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(st["uri"], search) == 401
    assert service.main(["user", "--dir", str(pg_dir), "--name", "sweep", "--role",
                         "writer"]) == 0
    creds = pg_dir / "users" / "sweep.credentials"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert _get(st["uri"], search, read_credentials_file(creds)) == 200
    capsys.readouterr()
    assert service.main(["env", "--dir", str(pg_dir)]) == 0
    out = capsys.readouterr().out
    assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in out
    assert "tracking.credentials_file=" in out
    admin = (pg_dir / "admin.password").read_text().strip()
    assert admin not in out and read_credentials_file(creds)[PASSWORD] not in out


def _self_signed(d: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key (PEM files), as an admin would make one."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(d / "cert.pem"), str(d / "key.pem")


@pytest.mark.slow
def test_tls_server_is_checked_against_its_certificate(tmp_path, monkeypatch):
    """`service up --tls-cert/--tls-key` (uvicorn's TLS): https, and a client checks the
    server against MLFLOW_TRACKING_SERVER_CERT_PATH; without it a self-signed server is not
    trusted."""
    from leviathan.tracking.credentials import CERT
    from leviathan.tracking.server import is_up, start_server

    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv(CERT, cert)
    server = start_server(tmp_path / "store", tls=(cert, key))
    try:
        assert server.uri.startswith("https://127.0.0.1:") and is_up(server.uri)
        # MLflow's client in a process of its own, as a job's is: one in this process would
        # keep its TLS connection alive in MLflow's session pool, and the server, stopped,
        # waits for that connection to close (~20 s, then it is killed)
        client = ("import sys; from mlflow.tracking import MlflowClient; "
                  "print(MlflowClient(sys.argv[1]).get_experiment('0').name)")
        got = subprocess.run([sys.executable, "-c", client, server.uri], capture_output=True,
                             text=True, timeout=300)
        assert got.returncode == 0 and got.stdout.split() == ["Default"], got.stderr[-3000:]
        monkeypatch.delenv(CERT)
        assert not is_up(server.uri)  # an unknown certificate: refused
    finally:
        server.stop()
