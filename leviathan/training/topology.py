"""One check that the tasks a job starts are the ranks its trainer expects.

Each task SLURM starts is one Lightning rank (Lightning's SLURM environment: the task's
SLURM_PROCID is its global rank), so `launcher.nodes x launcher.tasks_per_node` must equal
`trainer.num_nodes x trainer.devices`, node for node, and a job that asks for GPUs needs one per
rank. A mismatch is refused in one line naming the keys: at plan time (the sweep's dry run and
launch, `check_launch`) and at job start (`python -m leviathan.train` under SLURM, from what
SLURM says it started: `check_job_start`), before any model or MLflow run exists. Without it,
`launcher.nodes=2` with `trainer.num_nodes=1` starts two independent world-size-1 copies that
share one run folder.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from leviathan.errors import LeviathanError

LAUNCHER_KEYS = "launcher.nodes x launcher.tasks_per_node"
TRAINER_KEYS = "trainer.num_nodes x trainer.devices"


class TopologyError(LeviathanError, ValueError):
    """The tasks a job starts are not the ranks its trainer expects; the message names the keys."""


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _ranks(tc: Any) -> tuple[int, int]:
    return int(_get(tc, "num_nodes", 1)), int(_get(tc, "devices", 1))


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'s' * (count != 1)}"


def check_tasks(tc: Any, nodes: int, tasks_per_node: int, where: str) -> None:
    """`nodes` x `tasks_per_node` tasks (as `where` names them) against the trainer's ranks."""
    num_nodes, devices = _ranks(tc)
    tasks, ranks = nodes * tasks_per_node, num_nodes * devices
    if tasks != ranks:
        fix = (f"trainer.num_nodes={nodes} trainer.devices={tasks_per_node}" if tasks > ranks
               else f"launcher.nodes={num_nodes} launcher.tasks_per_node={devices}")
        raise TopologyError(
            f"{where} = {nodes} x {tasks_per_node} = {_n(tasks, 'task')}, but {TRAINER_KEYS} "
            f"= {num_nodes} x {devices} = {_n(ranks, 'rank')}: each task is one rank; set {fix}")
    if nodes != num_nodes:
        raise TopologyError(
            f"{where} = {nodes} x {tasks_per_node}, but {TRAINER_KEYS} = {num_nodes} x "
            f"{devices}: the same total, split differently; set trainer.num_nodes={nodes} "
            f"trainer.devices={tasks_per_node} (one task per device on every node)")


def check_gpus(tc: Any, gpus_per_node: int, where: str) -> None:
    """A job that asks for GPUs per node (`where` names the key) needs one per device."""
    devices = _ranks(tc)[1]
    if gpus_per_node and gpus_per_node != devices:
        raise TopologyError(f"{where}={gpus_per_node} but trainer.devices={devices}: one GPU "
                            f"per rank; set both (and launcher.tasks_per_node) to the GPUs of "
                            "a node")


def check_launch(launcher: Any, tc: Any, run: str | None = None,
                 partition_gpus: int | None = None) -> None:
    """Plan time: a SLURM launcher config against one run's trainer config (`run` names it in
    the message). `partition_gpus`, when `sinfo` was asked: a GPU run on a partition with GPUs
    must ask for them (launcher.gpus_per_node). The local launcher starts one process per job
    and leaves the ranks to Lightning: nothing to check."""
    if _get(launcher, "name", "local") != "slurm":
        return
    try:
        check_tasks(tc, int(_get(launcher, "nodes", 1)), int(_get(launcher, "tasks_per_node", 1)),
                    LAUNCHER_KEYS)
        gpus = int(_get(launcher, "gpus_per_node", 0) or 0)
        check_gpus(tc, gpus, "launcher.gpus_per_node")
        if (partition_gpus and not gpus and _get(tc, "accelerator") in ("gpu", "cuda")
                and not _asks_gpus(_get(launcher, "additional_parameters") or {})):
            raise TopologyError(
                f"trainer.accelerator={_get(tc, 'accelerator')} but launcher.gpus_per_node=0 "
                f"on a partition with {partition_gpus} GPUs per node: the job would get none; "
                f"set launcher.gpus_per_node={_ranks(tc)[1]}")
    except TopologyError as e:
        raise TopologyError(f"{run}: {e}" if run else str(e)) from None


def _asks_gpus(additional: Mapping) -> bool:
    """GPUs asked for through launcher.additional_parameters (gres, gpus, ...) instead."""
    return any(k.replace("-", "_") in ("gres", "gpus", "gpus_per_task", "gpus_per_node")
               for k in additional)


def slurm_tasks(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """(SLURM_NTASKS, SLURM_NNODES) of the SLURM job step this process belongs to, when
    Lightning takes its ranks from SLURM (as its SLURMEnvironment.detect() decides: srun'd
    tasks, not an interactive `bash` allocation); None otherwise."""
    if env is None:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        with warnings.catch_warnings():  # its hint to use srun is not ours to print
            warnings.simplefilter("ignore")
            if not SLURMEnvironment.detect():
                return None
        env = os.environ
    elif "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    return int(env["SLURM_NTASKS"]), int(env.get("SLURM_NNODES") or 1)


def check_job_start(tc: Any, env: Mapping[str, str] | None = None) -> None:
    """Job start: the tasks SLURM started (SLURM_NTASKS on SLURM_NNODES nodes, and
    SLURM_GPUS_ON_NODE) against the trainer's ranks; nothing outside a SLURM job step."""
    got = slurm_tasks(env)
    if got is None:
        return
    env = os.environ if env is None else env
    tasks, nodes = got
    num_nodes, devices = _ranks(tc)
    if tasks != num_nodes * devices or nodes != num_nodes:
        per_node = f"{tasks // nodes}" if tasks % nodes == 0 else f"{tasks}/{nodes}"
        raise TopologyError(
            f"SLURM started {_n(tasks, 'task')} on {_n(nodes, 'node')} (SLURM_NTASKS, "
            f"SLURM_NNODES: {LAUNCHER_KEYS}), but {TRAINER_KEYS} = {num_nodes} x {devices} = "
            f"{_n(num_nodes * devices, 'rank')}: each task is one rank; set "
            f"trainer.num_nodes={nodes} trainer.devices={per_node}, or start {num_nodes} x "
            f"{devices} tasks")
    gpus = env.get("SLURM_GPUS_ON_NODE")
    if gpus and _get(tc, "accelerator") in ("gpu", "cuda", "auto"):
        check_gpus(tc, int(gpus), "SLURM_GPUS_ON_NODE (launcher.gpus_per_node)")
