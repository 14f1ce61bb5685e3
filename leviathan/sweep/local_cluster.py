"""The one-node SLURM cluster of this machine (slurm/cluster.sh: slurmctld + slurmd + munged),
for the integration tests and for trying the SLURM path locally: `local_cluster_up()`."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from leviathan.errors import LeviathanError

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "slurm" / "cluster.sh"


class ClusterUnavailable(LeviathanError, RuntimeError):
    """The local test cluster cannot be started here (not root, no apt or packages)."""


@dataclass
class LocalCluster:
    slurm_conf: str  # the generated slurm.conf; export SLURM_CONF=<this> for sbatch/sinfo
    log: str  # what `slurm/cluster.sh up` printed


def local_cluster_up(timeout: float = 600.0) -> LocalCluster:
    """`slurm/cluster.sh up` (installs packages if needed) and where its slurm.conf is.

    Raises ClusterUnavailable (tests skip on it) when not root or the
    packages cannot be installed, RuntimeError with the script's output on other failures."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("the local SLURM cluster needs root (munged, slurmctld, slurmd)")
    res = subprocess.run(["bash", str(CLUSTER_SH), "up"], capture_output=True, text=True,
                         timeout=timeout)
    out = (res.stdout + res.stderr).strip()
    if res.returncode in (2, 3):
        raise ClusterUnavailable(f"slurm/cluster.sh up: {out.splitlines()[-1]}")
    if res.returncode != 0:
        raise RuntimeError(f"slurm/cluster.sh up failed (exit {res.returncode}):\n{out}")
    env = subprocess.run(["bash", str(CLUSTER_SH), "env"], capture_output=True, text=True,
                         check=True).stdout
    return LocalCluster(slurm_conf=env.strip().partition("=")[2], log=out)
