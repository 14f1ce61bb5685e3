"""The SLURM clusters of this machine (slurm/cluster.sh: slurmctld + slurmd + munged), for the
integration tests and for trying the SLURM path locally: `local_cluster_up()` (one node) and
`local_cluster_up(nodes=2)` (two nodes, each slurmd in its own network namespace, beside the
one-node cluster: slurm/nodes.sh)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from leviathan.errors import LeviathanError

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "slurm" / "cluster.sh"


class ClusterUnavailable(LeviathanError, RuntimeError):
    """The local test cluster cannot be started here (not root, no apt or packages, no network
    namespaces)."""


@dataclass
class LocalCluster:
    slurm_conf: str  # the generated slurm.conf; export SLURM_CONF=<this> for sbatch/sinfo
    log: str  # what `slurm/cluster.sh up` printed
    nodes: list[str] = field(default_factory=list)  # its node names, in order
    controller_address: str = "127.0.0.1"  # where slurmctld listens for the nodes (several
    #   nodes: the bridge's address, which every node and this host reach)


def cluster_args(nodes: int = 1) -> list[str]:
    return [] if nodes == 1 else ["--nodes", str(nodes)]


def local_cluster_up(timeout: float = 600.0, nodes: int = 1) -> LocalCluster:
    """`slurm/cluster.sh up [--nodes N]` (installs packages if needed) and where its slurm.conf
    is, its node names and controller address (read from that slurm.conf).

    Raises ClusterUnavailable (tests skip on it) when not root, the packages cannot be installed
    or (several nodes) network namespaces cannot be made; RuntimeError with the script's output
    on other failures."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("the local SLURM cluster needs root (munged, slurmctld, slurmd)")
    res = subprocess.run(["bash", str(CLUSTER_SH), "up", *cluster_args(nodes)],
                         capture_output=True, text=True, timeout=timeout)
    out = (res.stdout + res.stderr).strip()
    if res.returncode in (2, 3, 4):
        raise ClusterUnavailable(f"slurm/cluster.sh up: {out.splitlines()[-1]}")
    if res.returncode != 0:
        raise RuntimeError(f"slurm/cluster.sh up failed (exit {res.returncode}):\n{out}")
    env = subprocess.run(["bash", str(CLUSTER_SH), "env", *cluster_args(nodes)],
                         capture_output=True, text=True, check=True).stdout
    conf = env.strip().partition("=")[2]
    text = Path(conf).read_text()
    host = re.search(r"^SlurmctldHost=[^(\n]*\(([^)]+)\)", text, flags=re.M)
    return LocalCluster(slurm_conf=conf, log=out,
                        nodes=re.findall(r"^NodeName=(\S+)", text, flags=re.M),
                        controller_address=host[1] if host else "127.0.0.1")


def local_cluster_down(nodes: int = 1) -> None:
    """`slurm/cluster.sh down [--nodes N]`: stop its daemons (several nodes: and remove the
    namespaces, the bridge and the /etc/hosts lines)."""
    subprocess.run(["bash", str(CLUSTER_SH), "down", *cluster_args(nodes)], check=False)


def local_cluster_running(nodes: int = 1) -> bool:
    return os.geteuid() == 0 and subprocess.run(
        ["bash", str(CLUSTER_SH), "status", *cluster_args(nodes)],
        capture_output=True).returncode == 0


def cluster_dir(nodes: int = 1) -> Path:
    """The cluster's folder (LEVIATHAN_SLURM_DIR or the script's default for `nodes`)."""
    env = subprocess.run(["bash", str(CLUSTER_SH), "env", *cluster_args(nodes)],
                         capture_output=True, text=True, check=True).stdout
    return Path(env.strip().partition("=")[2]).parent.parent


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def shared_cluster(nodes: int = 1, timeout: float = 600.0) -> Iterator[LocalCluster]:
    """The local cluster for one of several users at once (test sessions, pytest-xdist
    workers): started when down, and stopped when its last user is done if one of them started
    it (a cluster started by hand stays up). Users are pid files in <its folder>/users, read and
    written under a lock; a user that died is not waited for."""
    from leviathan.tracking.server import pid_alive

    if os.geteuid() != 0:
        raise ClusterUnavailable("the local SLURM cluster needs root (munged, slurmctld, slurmd)")
    users = cluster_dir(nodes) / "users"
    users.mkdir(parents=True, exist_ok=True)
    started, me = users / "started-by-a-user", users / str(os.getpid())
    with _locked(users / "lock"):
        was_up = local_cluster_running(nodes)
        cluster = local_cluster_up(timeout, nodes)
        if not was_up:
            started.touch()
        me.touch()
    try:
        yield cluster
    finally:
        with _locked(users / "lock"):
            me.unlink(missing_ok=True)
            others = [p for p in users.iterdir() if p.name.isdigit()]
            for p in others:
                if not pid_alive(p.name):
                    p.unlink(missing_ok=True)
            if started.exists() and not any(p.exists() for p in others):
                local_cluster_down(nodes)
                started.unlink(missing_ok=True)
