"""Shared fixtures: the offline tokenizer, a real `mlflow server`, the composed configs.

Area-specific fixtures live in tests/<area>/conftest.py or in the test modules themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on this 2-core machine: one BLAS/OpenMP thread
    # each (before torch is imported), inherited by the jobs and servers they start
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
SHARED = Path(os.environ.get("LEVIATHAN_SHARED", REPO.parent / "shared")).resolve()
TOKENIZERS = SHARED / "tokenizers"


class _LoadGroupIds:
    """pytest-xdist 3.8's --dist loadgroup tags a grouped item's id with `@<group>` by setting
    `item._nodeid`, which pytest 9 no longer reads (Node.nodeid is str(item._id)): without this
    every xdist_group would be spread over the workers (two starts of one SLURM cluster)."""

    @pytest.hookimpl(trylast=True)  # after xdist's own (in the workers)
    def pytest_collection_modifyitems(self, config, items):
        if not (config.getvalue("loadgroup") if hasattr(config.option, "loadgroup") else None):
            return
        from _pytest.nodeid import coerce_node_id

        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})
            if names and "@" not in item.nodeid:
                item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: where the ids are sent from
        config.pluginmanager.register(_LoadGroupIds(), "leviathan-loadgroup-ids")


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:  # one real SLURM cluster per machine: its tests share one xdist worker
        names = getattr(item, "fixturenames", ())
        if "slurm_cluster" in names:
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif "slurm_two_nodes" in names:  # the two-node cluster: one start, one worker
            item.add_marker(pytest.mark.xdist_group("slurm_two_nodes"))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def tiktoken_cache(tmp_path_factory) -> Path:
    """Stage the verified vocabularies from ../shared/tokenizers into a TIKTOKEN_CACHE_DIR."""
    if not TOKENIZERS.is_dir():
        pytest.exit(f"missing {TOKENIZERS}: the tests need ../shared/tokenizers beside the repo "
                    "(or LEVIATHAN_SHARED pointing at shared/)", returncode=3)
    from leviathan.data.tokenizer import stage

    cache = tmp_path_factory.mktemp("tiktoken_cache")
    for name in ("o200k_base", "cl100k_base"):
        stage(TOKENIZERS / f"{name}.tiktoken", cache_dir=cache)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def compose():
    """`compose(name="train", overrides=[...])`: the primary config exactly as the entry points
    compose it (the real conf/, schemas registered, conf/local included)."""
    from leviathan.config import compose as compose_config

    return compose_config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One debug corpus (written and prepared on first use) for every training test."""
    path = tmp_path_factory.getbasetemp() / "train-data"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` process on 127.0.0.1 for the whole session; yields its URI."""
    from leviathan.tracking.server import start_server

    server = start_server(tmp_path_factory.mktemp("mlflow"))
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory):
    """A real `mlflow server --app-name basic-auth` on 127.0.0.1 (SQLite), set up as
    `service up --auth` sets one up (auth_env: admin password and CSRF key in 0600 files), with
    two logins made by `service user`: {"uri", "dir", "writer", "reader"} (credentials files)."""
    from leviathan.tracking.server import start_server
    from leviathan.tracking.service import AUTH_APP, auth_env, create_login

    d = tmp_path_factory.mktemp("mlflow-auth")
    server = start_server(d, app_name=AUTH_APP, env=auth_env(d), workers=2)
    admin = (d / "admin.password").read_text().strip()
    logins = {role: create_login(server.uri, admin, name, role, d / "users")
              for name, role in (("sweep", "writer"), ("viewer", "reader"))}
    yield {"uri": server.uri, "dir": d, **logins}
    server.stop()


def _apt_install(package: str) -> str | None:
    """Install a Debian package with apt-get (as root; `apt-get update` first only when the
    install fails); None when it was installed, else why it could not be."""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return f"{package} is not installed and apt-get cannot install it here (needs root)"
    apt = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run([*apt, "install", "-y", package], env=env).returncode == 0:
        return None
    if subprocess.run([*apt, "update"], env=env).returncode != 0:
        return f"apt-get update failed (no package index: offline?), so {package} is missing"
    if subprocess.run([*apt, "install", "-y", package], env=env).returncode != 0:
        return f"apt-get install -y {package} failed"
    return None


def _ensure_postgresql() -> None:
    """Debian's postgresql, installed when missing and apt-get is there (as root)."""
    from leviathan.tracking.postgres import PostgresError, pg_bin

    try:
        pg_bin()
        return
    except PostgresError:
        if not shutil.which("apt-get") or os.geteuid() != 0:
            raise
    why = _apt_install("postgresql")
    if why:
        raise RuntimeError(why)
    pg_bin()  # names what is still missing


@pytest.fixture(scope="session")
def chromium():
    """A real browser: Debian's headless Chromium (installed with apt-get when missing, as
    slurm/cluster.sh installs SLURM); yields helpers.browser.Browser. Skips, saying why, only
    when it cannot be installed."""
    from helpers.browser import Browser

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        why = _apt_install("chromium")
        exe = shutil.which("chromium")
        if exe is None:
            pytest.skip(f"no Chromium for the dashboard's browser test: {why}")
    with tempfile.TemporaryDirectory(prefix="leviathan-chromium-") as profile:
        yield Browser(exe, Path(profile))


@pytest.fixture
def pg_dir():
    """A folder PostgreSQL's own user can reach (pytest's tmp_path is private to root).
    `make test` installs what it needs from nothing: Debian's postgresql as slurm/cluster.sh
    installs SLURM, when it is missing and apt-get is there."""
    _ensure_postgresql()
    d = Path(tempfile.mkdtemp(prefix="leviathan-test-pg-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    from leviathan.tracking import service

    service.down(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real one-node SLURM cluster (slurm/cluster.sh up; installs packages if needed), stopped
    afterwards if this session started it. Skips, saying why, only when it cannot be started."""
    import subprocess

    from leviathan.sweep.local_cluster import (
        CLUSTER_SH,
        ClusterUnavailable,
        local_cluster_up,
    )

    was_up = os.geteuid() == 0 and subprocess.run(
        ["bash", str(CLUSTER_SH), "status"], capture_output=True).returncode == 0
    try:
        cluster = local_cluster_up()
    except ClusterUnavailable as e:
        pytest.skip(f"no local SLURM cluster: {e}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.slurm_conf
    yield cluster
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    if not was_up:
        subprocess.run(["bash", str(CLUSTER_SH), "down"], check=False)


@pytest.fixture(scope="session")
def slurm_two_nodes():
    """A real two-node SLURM cluster on this machine (slurm/cluster.sh up --nodes 2: each slurmd
    in its own network namespace, beside the one-node cluster), shared by every session and
    xdist worker using it at once and torn down (daemons, namespaces, bridge, /etc/hosts lines)
    by the last of them if one of them started it (local_cluster.shared_cluster). Skips, saying
    why, only when it cannot be made here (not root, no packages, no network namespaces). It
    leaves SLURM_CONF alone: tests set it with the `two_nodes` fixture (tests/integration)."""
    import time

    from leviathan.sweep.local_cluster import ClusterUnavailable, shared_cluster

    t0 = time.monotonic()
    try:
        with shared_cluster(nodes=2) as cluster:
            print(f"\ntwo-node SLURM cluster up in {time.monotonic() - t0:.1f} s")
            yield cluster
    except ClusterUnavailable as e:
        pytest.skip(f"no local two-node SLURM cluster: {e}")


@pytest.fixture(scope="session")
def nodes_mlflow(slurm_two_nodes, tmp_path_factory):
    """A real `mlflow server` the two-node cluster's jobs reach: on the nodes' bridge address
    (the session's `mlflow_server` listens on this host's loopback, which a node's namespace
    does not share)."""
    from leviathan.tracking.server import start_server

    server = start_server(tmp_path_factory.mktemp("mlflow-nodes"),
                          host=slurm_two_nodes.controller_address)
    yield server.uri
    server.stop()
