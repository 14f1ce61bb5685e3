"""What the SLURM cluster says: partitions, job states, and the checks made before submitting.

`check_slurm(cfg)` runs before any job is submitted and raises LauncherError naming the
`launcher.<key>` that does not fit the cluster (a partition that does not exist, more nodes,
CPUs, memory or GPUs per node than the partition has). `slurm_states(ids)` reads job states from
`squeue` (slurmctld keeps finished jobs for MinJobAge seconds), which works without accounting.
The one-node test cluster is local_cluster.py; the toy-array self-check is selfcheck.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from leviathan.sweep.launcher_config import LauncherError

STATES = ("queued", "running", "finished", "failed", "unknown")  # what job_state() answers
_SLURM_STATES = {
    "queued": {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "PREEMPTED",
               "RESV_DEL_HOLD", "SPECIAL_EXIT"},
    "running": {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "SUSPENDED",
                "STOPPED"},
    "finished": {"COMPLETED"},
    "failed": {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
               "DEADLINE", "REVOKED", "INTERRUPTED"},
}


@dataclass
class Partition:
    name: str  # as `sinfo` prints it, without the default marker
    nodes: int  # nodes in the partition
    max_cpus: int  # most CPUs on one node
    max_mem_mb: int  # most memory on one node, MB
    max_gpus: int  # most GPUs (gres gpu) on one node
    default: bool  # the partition sbatch uses when none is given


def _run(cmd: list[str], timeout: float = 30.0) -> str:
    if shutil.which(cmd[0]) is None:
        raise LauncherError(f"launcher=slurm: `{cmd[0]}` is not on PATH; run the sweep on a "
                            "SLURM login node (or `slurm/cluster.sh up` for a local cluster)")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise LauncherError(f"launcher=slurm: `{' '.join(cmd)}` did not answer in "
                            f"{timeout:.0f}s (is slurmctld up?)") from e
    if out.returncode != 0:
        raise LauncherError(f"launcher=slurm: `{' '.join(cmd)}` failed: "
                            f"{(out.stderr or out.stdout).strip()}")
    return out.stdout


def gres_gpus(gres: str) -> int:
    found = re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres)
    return max((int(n) for n in found), default=0)


def partitions() -> dict[str, Partition]:
    """The cluster's partitions, from one `sinfo` call."""
    parts: dict[str, Partition] = {}
    for line in _run(["sinfo", "-h", "-o", "%P|%D|%c|%m|%G"]).splitlines():
        if not line.strip():
            continue
        name, nodes, cpus, mem, gres = (line.split("|") + [""] * 5)[:5]
        default = name.endswith("*")
        name = name.rstrip("*")
        cpus_i = int(re.sub(r"\D.*", "", cpus) or 0)
        mem_i = int(re.sub(r"\D.*", "", mem) or 0)
        p = parts.setdefault(name, Partition(name, 0, 0, 0, 0, default))
        p.nodes += int(nodes or 0)
        p.max_cpus = max(p.max_cpus, cpus_i)
        p.max_mem_mb = max(p.max_mem_mb, mem_i)
        p.max_gpus = max(p.max_gpus, gres_gpus(gres))
        p.default = p.default or default
    return parts


def check_slurm(cfg: Any) -> Partition:
    """Check a SlurmLauncherConfig against the cluster before submitting; returns the partition."""
    parts = partitions()
    names = ", ".join(sorted(parts)) or "none"
    if cfg.partition is None:
        default = [p for p in parts.values() if p.default]
        if not default:
            raise LauncherError(f"launcher.partition: not set and the cluster has no default "
                                f"partition; set launcher.partition to one of: {names}")
        part = default[0]
    elif cfg.partition not in parts:
        raise LauncherError(f"launcher.partition: partition {cfg.partition!r} does not exist on "
                            f"this cluster (`sinfo` lists: {names})")
    else:
        part = parts[cfg.partition]
    where = f"partition {part.name!r}"
    if cfg.nodes > part.nodes:
        raise LauncherError(f"launcher.nodes: {cfg.nodes} requested, {where} has {part.nodes}")
    cpus = cfg.cpus_per_task * cfg.tasks_per_node
    if part.max_cpus and cpus > part.max_cpus:
        raise LauncherError(f"launcher.cpus_per_task: {cfg.cpus_per_task} x {cfg.tasks_per_node} "
                            f"tasks = {cpus} CPUs per node, {where} has at most {part.max_cpus}")
    if part.max_mem_mb and cfg.mem_gb * 1024 > part.max_mem_mb:
        raise LauncherError(f"launcher.mem_gb: {cfg.mem_gb} GB per node, {where} has at most "
                            f"{part.max_mem_mb / 1024:.1f} GB")
    if cfg.gpus_per_node > part.max_gpus:
        raise LauncherError(f"launcher.gpus_per_node: {cfg.gpus_per_node} requested, {where} "
                            f"has at most {part.max_gpus} GPUs per node")
    return part


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Raw SLURM states (PENDING, RUNNING, COMPLETED, ...) of the jobs slurmctld still knows.

    Ids are submitit's ("123" or array tasks "123_4"); ids it no longer knows are left out."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    wanted = set(job_ids)
    bases = sorted({j.split("_")[0] for j in job_ids})
    out: dict[str, str] = {}
    for group in ([bases] if len(bases) > 1 else []) + [[b] for b in bases]:
        res = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T",
                              "-j", ",".join(group)], capture_output=True, text=True, timeout=30)
        if res.returncode == 0:
            for line in res.stdout.splitlines():
                jid, _, state = line.strip().partition("|")
                if jid in wanted:
                    out[jid] = state.split()[0] if state else "UNKNOWN"
            if len(group) > 1:
                break  # one call answered for every id
    return out


def map_slurm_state(raw: str | None) -> str:
    """SLURM's (or sacct's) state name -> queued | running | finished | failed | unknown."""
    words = (raw or "").split()
    name = words[0].rstrip("+").upper() if words else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
    return next((s for s, names in _SLURM_STATES.items() if name in names), "unknown")
