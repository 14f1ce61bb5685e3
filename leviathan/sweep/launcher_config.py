"""The `launcher` config group: where a sweep's jobs run (local processes or a SLURM array).

Typed schemas with a comment per field, validation whose errors name `launcher.<key>`, and the
mapping to submitit's parameters. The executors themselves live in leviathan/sweep/launcher.py.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.typed_config import (
    above,
    at_least,
    check_fields,
    each,
    in_range,
    optional,
    positive,
    text,
)


class LauncherError(LeviathanError, ValueError):
    """A launcher config that does not fit the machine or cluster; the message names the key."""


@dataclass
class LocalLauncherConfig:
    name: str = "local"  # launcher kind: jobs run as local processes (submitit LocalExecutor)
    max_parallel: int = 1  # jobs running at once; the others wait (1 on a CPU machine, #GPUs on a
    #   GPU box)
    timeout_min: float = 1440.0  # wall-clock limit of one job attempt, minutes
    signal_delay_s: int = 60  # the checkpoint signal (USR2) comes this long before the limit
    max_num_timeout: int = 3  # times a job may be requeued after hitting timeout_min
    requeue: bool = True  # on the signal, rerun the job with the same arguments (it resumes)
    tasks_per_node: int = 1  # processes per job
    gpus_per_node: int = 0  # GPUs given to each job, taken from visible_gpus (0: CPU jobs)
    visible_gpus: list[int] = field(default_factory=list)  # GPU ids shared out among running jobs,
    #   e.g. [0, 1, 2, 3]
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (e.g. "source
    #   .venv/bin/activate")
    poll_s: float = 1.0  # seconds between state checks while waiting
    folder: str = "${paths.scratch_dir}/submitit"  # submitit's pickles and logs
    #   (${paths.scratch_dir}/submitit)

    _checks = {
        "max_parallel": positive(), "timeout_min": above(0), "signal_delay_s": at_least(0),
        "max_num_timeout": at_least(0), "tasks_per_node": positive(),
        "gpus_per_node": at_least(0), "visible_gpus": each(at_least(0)), "setup": each(text()),
        "poll_s": above(0),
    }


@dataclass
class SlurmLauncherConfig:
    name: str = "slurm"  # launcher kind (this file: a SLURM job array via submitit)
    partition: str | None = None  # sbatch --partition (null: the cluster's default partition)
    account: str | None = None  # sbatch --account (null: the user's default)
    qos: str | None = None  # sbatch --qos (null: none)
    nodes: int = 1  # nodes per job (multi-node runs use Lightning's SLURM environment)
    gpus_per_node: int = 0  # sbatch --gpus-per-node (0: CPU job, flag left out)
    tasks_per_node: int = 1  # sbatch --ntasks-per-node: one per GPU for DDP
    cpus_per_task: int = 1  # sbatch --cpus-per-task (data loading threads + 1)
    mem_gb: float = 4.0  # sbatch --mem per node in GB (0: the cluster's default)
    timeout_min: int = 60  # sbatch --time in minutes, for one attempt
    constraint: str | None = None  # sbatch --constraint, e.g. "a100|h100" (null: none)
    array_parallelism: int = 256  # array tasks running at once (--array=0-N%k)
    setup: list[str] = field(default_factory=list)  # lines in the sbatch script before srun: module
    #   load, env activation
    signal_delay_s: int = 120  # USR2 this long before the time limit: checkpoint and requeue
    max_num_timeout: int = 3  # times a job may be requeued after a time-out (preemptions: any)
    requeue: bool = True  # requeue on time-out/preemption (--requeue) and resume; false: fail
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # more #SBATCH flags, e.g.
    #   {mail-type: END, exclusive: true}
    srun_args: list[str] = field(default_factory=list)  # extra arguments to the job's srun
    kill_on_bad_exit: bool = True  # several tasks: srun --kill-on-bad-exit=1, so when one rank
    #   exits with an error or is killed the others are stopped at once (false: the cluster's
    #   default, often none: the other ranks hang until ddp_timeout_s or the time limit)
    job_name: str = "leviathan"  # sbatch --job-name
    python: str | None = None  # command starting Python on the nodes (null: this interpreter)
    check: bool = True  # check partition/nodes/cpus/mem/gpus against `sinfo` before submitting
    poll_s: float = 15.0  # seconds between state checks (status, waiting)
    folder: str = "${paths.scratch_dir}/submitit"  # submitit's pickles and logs, on a filesystem
    #   the nodes share

    _checks = {
        "partition": optional(text()), "account": optional(text()), "qos": optional(text()),
        "nodes": positive(), "gpus_per_node": at_least(0), "tasks_per_node": positive(),
        "cpus_per_task": positive(), "mem_gb": in_range(0), "timeout_min": positive(),
        "constraint": optional(text()), "array_parallelism": positive(), "setup": each(text()),
        "signal_delay_s": at_least(0), "max_num_timeout": at_least(0),
        "srun_args": each(text()), "python": optional(text()), "poll_s": above(0),
    }


LauncherConfig = LocalLauncherConfig | SlurmLauncherConfig
_KINDS: dict[str, type] = {"local": LocalLauncherConfig, "slurm": SlurmLauncherConfig}


def _bad(key: str, msg: str) -> LauncherError:
    return LauncherError(f"launcher.{key}: {msg}")


def validate(cfg: LauncherConfig) -> LauncherConfig:
    """Check types and ranges (the schema's `_checks`), then the rules tying fields together;
    every error names the `launcher.<key>`."""
    check_fields(cfg, "launcher", LauncherError)
    if not isinstance(cfg.folder, str) or not cfg.folder:
        raise _bad("folder", f"must be a path, got {cfg.folder!r}")
    if cfg.timeout_min * 60 <= cfg.signal_delay_s:
        raise _bad("signal_delay_s", f"{cfg.signal_delay_s}s leaves no time before "
                                     f"timeout_min={cfg.timeout_min}")
    if isinstance(cfg, LocalLauncherConfig):
        need = cfg.max_parallel * cfg.gpus_per_node
        if cfg.gpus_per_node and len(cfg.visible_gpus) < need:
            raise _bad("visible_gpus", f"{cfg.max_parallel} jobs x {cfg.gpus_per_node} GPUs need "
                                       f"{need} ids, got {cfg.visible_gpus!r}")
        return cfg
    if not isinstance(cfg.additional_parameters, dict):
        raise _bad("additional_parameters", f"must be a mapping of sbatch flags, got "
                                            f"{cfg.additional_parameters!r}")
    return cfg


def to_launcher_config(cfg: Any) -> LauncherConfig:
    """A validated Local/SlurmLauncherConfig from a dataclass, dict or OmegaConf node (a whole
    sweep config's `launcher` node is accepted too); unknown keys are errors naming them."""
    from leviathan.typed_config import to_config

    if isinstance(cfg, LocalLauncherConfig | SlurmLauncherConfig):
        return validate(dataclasses.replace(cfg))
    if hasattr(cfg, "keys") and "launcher" in cfg and "name" not in cfg:
        cfg = cfg["launcher"]
    kind = cfg.get("name", "local") if hasattr(cfg, "get") else None
    if kind not in _KINDS:
        raise _bad("name", f"must be one of {sorted(_KINDS)}, got {kind!r}")
    return validate(to_config(_KINDS[kind], cfg, "launcher", LauncherError))


def slurm_parameters(cfg: SlurmLauncherConfig) -> dict[str, Any]:
    """SlurmExecutor.update_parameters(**this): the config in submitit's sbatch vocabulary."""
    params: dict[str, Any] = {
        "job_name": cfg.job_name, "time": int(math.ceil(cfg.timeout_min)), "nodes": cfg.nodes,
        "ntasks_per_node": cfg.tasks_per_node, "cpus_per_task": cfg.cpus_per_task,
        "array_parallelism": cfg.array_parallelism, "signal_delay_s": cfg.signal_delay_s,
        "setup": list(cfg.setup), "srun_args": srun_args(cfg),
        "additional_parameters": {("requeue" if cfg.requeue else "no-requeue"): True,
                                  **cfg.additional_parameters},
    }
    if cfg.gpus_per_node:
        params["gpus_per_node"] = cfg.gpus_per_node
    if cfg.mem_gb:
        gb = cfg.mem_gb
        params["mem"] = f"{int(gb)}GB" if float(gb).is_integer() else f"{int(gb * 1024)}MB"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cfg, key) is not None:
            params[key] = getattr(cfg, key)
    return params


def srun_args(cfg: SlurmLauncherConfig) -> list[str]:
    """launcher.srun_args, with --kill-on-bad-exit=1 first for a job of several tasks
    (launcher.kill_on_bad_exit) unless srun_args already say how."""
    args = list(cfg.srun_args)
    several = cfg.nodes * cfg.tasks_per_node > 1
    if cfg.kill_on_bad_exit and several and not any(
            a.startswith(("--kill-on-bad-exit", "-K")) for a in args):
        args.insert(0, "--kill-on-bad-exit=1")
    return args


def local_parameters(cfg: LocalLauncherConfig) -> dict[str, Any]:
    """LocalExecutor.update_parameters(**this)."""
    return {"timeout_min": cfg.timeout_min, "signal_delay_s": cfg.signal_delay_s,
            "tasks_per_node": cfg.tasks_per_node, "gpus_per_node": cfg.gpus_per_node,
            "setup": list(cfg.setup)}
