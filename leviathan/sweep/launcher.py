"""The `launcher` config group and a thin layer over submitit (no home-made scheduler).

- `make_executor(cfg, folder)`: a submitit SlurmExecutor (parameters mapped from the config,
  checked against the cluster first) or LocalExecutor (jobs are local processes).
- `submit_array(executor, fns)`: SLURM: one job array (`executor.batch()`, `%array_parallelism`);
  local: at most `max_parallel` processes at once, the rest queued and started as slots free.
- `job_state(job)` -> queued | running | finished | failed | unknown; `wait(jobs)`; `cancel(jobs)`;
  `load_job(name, folder, job_id)` rebuilds a job handle from its id in another process.
- `ResumableCall(fn, *args)`: submitit's Checkpointable protocol: on the timeout or preemption
  signal the job is requeued with the same arguments, and `fn` resumes from its own checkpoints.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from leviathan.sweep.slurm_check import (
    STATES,
    LauncherError,
    check_slurm,
    map_slurm_state,
    slurm_states,
)

__all__ = ["STATES", "LauncherError", "LocalLauncherConfig", "SlurmLauncherConfig",
           "ResumableCall", "cancel", "job_state", "job_states", "load_job", "make_executor",
           "submit_array", "to_launcher_config", "wait"]


@dataclass
class LocalLauncherConfig:
    name: str = "local"  # launcher kind: jobs run as local processes (submitit LocalExecutor)
    max_parallel: int = 1  # jobs running at once; the others wait (1 on a CPU machine)
    timeout_min: float = 1440.0  # wall-clock limit of one job attempt, minutes
    signal_delay_s: int = 60  # the checkpoint signal (USR2) comes this long before the limit
    max_num_timeout: int = 3  # times a job may be requeued after hitting timeout_min
    requeue: bool = True  # on the signal, rerun the job with the same arguments (it resumes)
    tasks_per_node: int = 1  # processes per job
    gpus_per_node: int = 0  # GPUs given to each job (from visible_gpus), 0 for CPU jobs
    visible_gpus: list[int] = field(default_factory=list)  # GPU ids to share out (e.g. [0,1])
    setup: list[str] = field(default_factory=list)  # shell lines run before each job
    poll_s: float = 1.0  # seconds between state checks while waiting
    folder: str = "submitit"  # submitit's pickles and logs (${paths.scratch_dir}/submitit)


@dataclass
class SlurmLauncherConfig:
    name: str = "slurm"  # launcher kind: one sbatch job array through submitit
    partition: str | None = None  # sbatch --partition (null: the cluster's default partition)
    account: str | None = None  # sbatch --account (null: the user's default)
    qos: str | None = None  # sbatch --qos (null: none)
    nodes: int = 1  # nodes per job (multi-node runs use Lightning's SLURM environment)
    gpus_per_node: int = 0  # sbatch --gpus-per-node (0: CPU job, flag left out)
    tasks_per_node: int = 1  # sbatch --ntasks-per-node: one per GPU for DDP
    cpus_per_task: int = 1  # sbatch --cpus-per-task (data loading threads + 1)
    mem_gb: float = 4.0  # sbatch --mem per node, GB (0: the cluster's default)
    timeout_min: int = 60  # sbatch --time, minutes, for one attempt
    constraint: str | None = None  # sbatch --constraint, e.g. "a100|h100" (null: none)
    array_parallelism: int = 256  # array tasks running at once (--array=0-N%k)
    setup: list[str] = field(default_factory=list)  # sbatch lines before srun: module load, ...
    signal_delay_s: int = 120  # USR2 this long before the time limit: checkpoint and requeue
    max_num_timeout: int = 3  # times a job may be requeued after a time-out (preemption: any)
    requeue: bool = True  # requeue on time-out/preemption (--requeue) and resume; false: fail
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # more #SBATCH flags
    srun_args: list[str] = field(default_factory=list)  # extra arguments to the job's srun
    job_name: str = "leviathan"  # sbatch --job-name
    python: str | None = None  # command starting Python on the nodes (null: this interpreter)
    check: bool = True  # check partition/nodes/cpus/mem/gpus against `sinfo` before submitting
    poll_s: float = 15.0  # seconds between state checks while waiting
    folder: str = "submitit"  # submitit's pickles and logs, on a filesystem the nodes share


LauncherConfig = LocalLauncherConfig | SlurmLauncherConfig
_KINDS: dict[str, type] = {"local": LocalLauncherConfig, "slurm": SlurmLauncherConfig}


def _bad(key: str, msg: str) -> LauncherError:
    return LauncherError(f"launcher.{key}: {msg}")


def validate(cfg: LauncherConfig) -> LauncherConfig:
    """Check types and ranges; every error names the `launcher.<key>`."""
    ints = {"signal_delay_s": 0, "max_num_timeout": 0, "tasks_per_node": 1, "gpus_per_node": 0}
    if isinstance(cfg, LocalLauncherConfig):
        ints["max_parallel"] = 1
    else:
        ints.update(nodes=1, cpus_per_task=1, timeout_min=1, array_parallelism=1)
    for key, lo in ints.items():
        v = getattr(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise _bad(key, f"must be an integer >= {lo}, got {v!r}")
    for key in ("timeout_min", "poll_s", "mem_gb"):
        v = getattr(cfg, key, 1)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or (
                key != "mem_gb" and v <= 0):
            raise _bad(key, f"must be a {'non-negative' if key == 'mem_gb' else 'positive'} "
                            f"number, got {v!r}")
    for key in ("setup", "srun_args"):
        v = getattr(cfg, key, [])
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise _bad(key, f"must be a list of strings, got {v!r}")
    if not isinstance(cfg.folder, str) or not cfg.folder:
        raise _bad("folder", f"must be a path, got {cfg.folder!r}")
    if isinstance(cfg, LocalLauncherConfig):
        if cfg.timeout_min * 60 <= cfg.signal_delay_s:
            raise _bad("signal_delay_s", f"{cfg.signal_delay_s}s leaves no time before "
                                         f"timeout_min={cfg.timeout_min}")
        need = cfg.max_parallel * cfg.gpus_per_node
        if cfg.gpus_per_node and len(cfg.visible_gpus) < need:
            raise _bad("visible_gpus", f"{cfg.max_parallel} jobs x {cfg.gpus_per_node} GPUs need "
                                       f"{need} ids, got {cfg.visible_gpus!r}")
        return cfg
    for key in ("partition", "account", "qos", "constraint", "python"):
        v = getattr(cfg, key)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise _bad(key, f"must be null or a non-empty string, got {v!r}")
    if cfg.timeout_min * 60 <= cfg.signal_delay_s:
        raise _bad("signal_delay_s", f"{cfg.signal_delay_s}s leaves no time before "
                                     f"timeout_min={cfg.timeout_min}")
    if not isinstance(cfg.additional_parameters, dict):
        raise _bad("additional_parameters", f"must be a mapping of sbatch flags, got "
                                            f"{cfg.additional_parameters!r}")
    return cfg


def to_launcher_config(cfg: Any) -> LauncherConfig:
    """A validated Local/SlurmLauncherConfig from a dataclass, dict or OmegaConf node (a whole
    sweep config's `launcher` node is accepted too); unknown keys are errors naming them."""
    if isinstance(cfg, LocalLauncherConfig | SlurmLauncherConfig):
        return validate(cfg)
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        if "launcher" in cfg and "name" not in cfg:
            cfg = cfg.launcher
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, dict):
        raise LauncherError(f"launcher: expected a mapping, got {type(cfg).__name__}")
    kind = cfg.get("name", "local")
    if kind not in _KINDS:
        raise _bad("name", f"must be one of {sorted(_KINDS)}, got {kind!r}")
    known = {f.name for f in fields(_KINDS[kind])}
    unknown = sorted(set(cfg) - known - {"_target_"})
    if unknown:
        raise _bad(unknown[0], f"unknown key for launcher={kind} "
                               f"(known: {', '.join(sorted(known))})")
    return validate(_KINDS[kind](**{k: v for k, v in cfg.items() if k in known}))


def slurm_parameters(cfg: SlurmLauncherConfig) -> dict[str, Any]:
    """SlurmExecutor.update_parameters(**this): the config in submitit's sbatch vocabulary."""
    params: dict[str, Any] = {
        "job_name": cfg.job_name, "time": int(math.ceil(cfg.timeout_min)), "nodes": cfg.nodes,
        "ntasks_per_node": cfg.tasks_per_node, "cpus_per_task": cfg.cpus_per_task,
        "array_parallelism": cfg.array_parallelism, "signal_delay_s": cfg.signal_delay_s,
        "setup": list(cfg.setup), "srun_args": list(cfg.srun_args),
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


def local_parameters(cfg: LocalLauncherConfig) -> dict[str, Any]:
    """LocalExecutor.update_parameters(**this)."""
    return {"timeout_min": cfg.timeout_min, "signal_delay_s": cfg.signal_delay_s,
            "tasks_per_node": cfg.tasks_per_node, "gpus_per_node": cfg.gpus_per_node,
            "setup": list(cfg.setup)}


def make_executor(cfg: Any, folder: str | os.PathLike | None = None):
    """A submitit executor for the launcher config (SLURM: checked against `sinfo` first).

    `folder` (default `launcher.folder`) holds submitit's pickles and logs; the config travels
    on the executor as `executor.launcher_config`."""
    cfg = to_launcher_config(cfg)
    path = Path(folder if folder is not None else cfg.folder).expanduser().absolute()
    if isinstance(cfg, LocalLauncherConfig):
        from submitit import LocalExecutor

        executor = LocalExecutor(path, max_num_timeout=cfg.max_num_timeout)
        executor.update_parameters(**local_parameters(cfg))
    else:
        from submitit import SlurmExecutor

        if cfg.check:
            check_slurm(cfg)
        try:
            executor = SlurmExecutor(path, max_num_timeout=cfg.max_num_timeout, python=cfg.python)
        except RuntimeError as e:  # no srun on PATH
            raise LauncherError(f"launcher=slurm: {e}") from e
        executor.update_parameters(**slurm_parameters(cfg))
    executor.launcher_config = cfg
    return executor


class ResumableCall:
    """`fn(*args, **kwargs)` as a job that is requeued with the same arguments on the time-out or
    preemption signal; `fn` resumes from what it saved (training: its last checkpoint).

    The protocol of submitit.helpers.Checkpointable (submitit calls `checkpoint()` from its
    signal handler and resubmits the DelayedSubmission it returns), without importing submitit
    where this module is imported."""

    def __init__(self, fn: Callable[..., Any], *args: Any, requeue: bool = True, **kwargs: Any):
        self.fn, self.args, self.kwargs, self.requeue = fn, args, kwargs, requeue

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any):
        if not self.requeue:
            return None  # submitit then lets the job end instead of requeueing it
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"ResumableCall({getattr(self.fn, '__qualname__', self.fn)!r})"


class QueuedLocalJob:
    """A local job waiting for a free slot; becomes a submitit LocalJob once started."""

    def __init__(self, pool: _LocalPool, fn: Callable[[], Any]):
        self.pool, self.fn, self.job, self.cancelled = pool, fn, None, False
        self.gpus: list[int] = []  # GPU ids handed to the job while it runs
        self.gpus_returned = False  # its GPUs went back to the pool when it ended

    @property
    def job_id(self) -> str | None:
        return None if self.job is None else self.job.job_id

    def done(self) -> bool:
        self.pool.pump()
        return self.cancelled or (self.job is not None and self.job.done())

    def result(self) -> Any:
        while not self.done():
            time.sleep(0.2)
        if self.job is None:
            raise LauncherError("local job was cancelled before it started")
        return self.job.result()

    def cancel(self) -> None:
        self.cancelled = True
        if self.job is not None:
            self.job.cancel()

    def stderr(self) -> str | None:
        return None if self.job is None else self.job.stderr()


class _LocalPool:
    def __init__(self, executor: Any, max_parallel: int, gpu_ids: Sequence[int], gpus: int):
        self.executor, self.max_parallel, self.jobs = executor, max_parallel, []
        self.free_gpus, self.gpus_per_job = list(gpu_ids), gpus

    def pump(self) -> None:
        """Start queued jobs while fewer than max_parallel run; hand back finished jobs' GPUs."""
        running = []
        for q in self.jobs:
            if q.job is not None and not q.gpus_returned:
                if q.job.done():
                    self.free_gpus.extend(q.gpus)
                    q.gpus_returned = True
                else:
                    running.append(q)
        for q in self.jobs:
            if len(running) >= self.max_parallel:
                break
            if q.job is None and not q.cancelled:
                q.gpus = [self.free_gpus.pop(0) for _ in range(self.gpus_per_job)]
                q.gpus_returned = False
                self.executor.update_parameters(visible_gpus=tuple(q.gpus) or ())
                q.job = self.executor.submit(q.fn)
                running.append(q)


def submit_array(executor: Any, fns: Sequence[Callable[[], Any]]) -> list[Any]:
    """Submit zero-argument callables (ResumableCall, functools.partial) as one array.

    SLURM: one sbatch job array; the returned submitit jobs have ids "<array>_<index>".
    Local: QueuedLocalJob handles, at most launcher.max_parallel running at once (the rest start
    as `job_state`/`wait`/`result` see slots free)."""
    from submitit import LocalExecutor

    if not fns:
        return []
    if isinstance(executor, LocalExecutor):
        cfg = getattr(executor, "launcher_config", None) or LocalLauncherConfig()
        pool = _LocalPool(executor, cfg.max_parallel, cfg.visible_gpus, cfg.gpus_per_node)
        pool.jobs = [QueuedLocalJob(pool, fn) for fn in fns]
        pool.pump()
        return list(pool.jobs)
    with executor.batch():
        jobs = [executor.submit(fn) for fn in fns]
    return jobs


def _outcome(job: Any) -> str | None:
    """'success' or 'error' once submitit wrote the job's result pickle, else None."""
    path = job.paths.result_pickle
    if not path.exists():
        return None
    from submitit.core.utils import pickle_load

    try:
        return pickle_load(path)[0]
    except (EOFError, OSError):  # being written right now
        return None


def _local_state(job: Any) -> str:
    if job._process is not None:
        alive = job._process.poll() is None
    else:  # a job from another process: its controller's pid is the job id
        try:
            os.kill(int(job.job_id), 0)
            alive = True
        except (OSError, ValueError):
            alive = False
    if alive:
        return "running"
    return "finished" if _outcome(job) == "success" else "failed"  # exited: read it again


def job_states(jobs: Sequence[Any]) -> list[str]:
    """queued | running | finished | failed | unknown for each job (from submit_array/load_job);
    one `squeue` call for all SLURM jobs, sacct (through submitit) for those squeue forgot."""
    out: list[str | None] = [None] * len(jobs)
    slurm: dict[int, Any] = {}
    for i, job in enumerate(jobs):
        if isinstance(job, QueuedLocalJob):
            job.pool.pump()
            if job.job is None:
                out[i] = "failed" if job.cancelled else "queued"
                continue
            job = job.job
        outcome = _outcome(job)
        if outcome is not None:
            out[i] = "finished" if outcome == "success" else "failed"
        elif type(job).__name__ == "LocalJob":
            out[i] = _local_state(job)
        else:
            slurm[i] = job
    raw = slurm_states([job.job_id for job in slurm.values()])
    for i, job in slurm.items():
        out[i] = map_slurm_state(raw.get(job.job_id) or job.state)
    return [s or "unknown" for s in out]


def job_state(job: Any) -> str:
    """queued | running | finished | failed | unknown for one job (see job_states)."""
    return job_states([job])[0]


def load_job(name: str, folder: str | os.PathLike, job_id: str) -> Any:
    """A submitit job handle for a job submitted earlier (e.g. ids from a sweep's manifest)."""
    if name == "local":
        from submitit.local.local import LocalJob

        return LocalJob(Path(folder).absolute(), job_id)
    if name == "slurm":
        from submitit import SlurmJob

        return SlurmJob(Path(folder).absolute(), job_id)
    raise _bad("name", f"must be one of {sorted(_KINDS)}, got {name!r}")


def cancel(jobs: Sequence[Any]) -> None:
    """Cancel queued and running jobs (local: SIGINT to the job; SLURM: scancel)."""
    for job in jobs:
        if job_state(job) in ("queued", "running", "unknown"):
            job.cancel(**({} if isinstance(job, QueuedLocalJob) else {"check": False}))


def wait(jobs: Sequence[Any], *, poll_s: float = 1.0,
         on_change: Callable[[int, str], None] | None = None) -> list[str]:
    """Poll until every job is finished or failed; `on_change(i, state)` on each new state.

    Ctrl-C cancels the jobs (local processes get SIGINT) and re-raises KeyboardInterrupt."""
    states = ["?"] * len(jobs)
    try:
        while True:
            todo = [i for i, s in enumerate(states) if s not in ("finished", "failed")]
            for i, new in zip(todo, job_states([jobs[i] for i in todo]), strict=True):
                if new != states[i]:
                    states[i] = new
                    if on_change is not None:
                        on_change(i, new)
            if all(s in ("finished", "failed") for s in states):
                return states
            time.sleep(poll_s)
    except KeyboardInterrupt:
        cancel(jobs)
        raise


def register_configs() -> None:
    """Register the schemas `launcher/local_schema` and `launcher/slurm_schema` in Hydra."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="launcher", name="local_schema", node=LocalLauncherConfig)
    store.store(group="launcher", name="slurm_schema", node=SlurmLauncherConfig)
