"""A thin layer over submitit for the `launcher` config group (no home-made scheduler).

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

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from leviathan.sweep.launcher_config import (
    LocalLauncherConfig,
    SlurmLauncherConfig,
    local_parameters,
    slurm_parameters,
    to_launcher_config,
)
from leviathan.sweep.slurm_check import (
    STATES,
    LauncherError,
    check_slurm,
    map_slurm_state,
    slurm_states,
)
from leviathan.tracking.server import pid_alive

__all__ = ["STATES", "LauncherError", "LocalLauncherConfig", "SlurmLauncherConfig",
           "ResumableCall", "cancel", "job_state", "job_states", "load_job", "load_jobs",
           "make_executor",
           "submit_array", "to_launcher_config", "wait"]


def make_executor(cfg: Any, folder: str | os.PathLike | None = None):
    """A submitit executor for the launcher config (SLURM: checked against `sinfo` first).

    `folder` (default `launcher.folder`) holds submitit's pickles and logs; the config travels
    on the executor as `executor.launcher_config` (SLURM: the checked partition as
    `executor.partition`)."""
    cfg = to_launcher_config(cfg)
    path = Path(folder if folder is not None else cfg.folder).expanduser().absolute()
    if isinstance(cfg, LocalLauncherConfig):
        from submitit import LocalExecutor

        executor = LocalExecutor(path, max_num_timeout=cfg.max_num_timeout)
        executor.update_parameters(**local_parameters(cfg))
    else:
        from submitit import SlurmExecutor

        partition = check_slurm(cfg) if cfg.check else None
        try:
            executor = SlurmExecutor(path, max_num_timeout=cfg.max_num_timeout, python=cfg.python)
        except RuntimeError as e:  # no srun on PATH
            raise LauncherError(f"launcher=slurm: {e}") from e
        executor.update_parameters(**slurm_parameters(cfg))
        executor.partition = partition  # what `sinfo` said (None: launcher.check=false)
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
                with _interruptible_children():
                    q.job = self.executor.submit(q.fn)
                running.append(q)


@contextlib.contextmanager
def _interruptible_children():
    """Start child processes that SIGINT can stop. A driver started in the background
    (`nohup ... &`, a non-interactive shell) ignores SIGINT, and an ignored signal stays
    ignored across exec: its local jobs would then ignore `cancel` (SIGINT to submitit's
    controller). A handler, unlike SIG_IGN, is reset to the default at exec."""
    ignored = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


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
        alive = pid_alive(job.job_id)
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
    raise LauncherError(f"launcher.name: must be local or slurm, got {name!r}")


def load_jobs(records: dict[str, dict], names: Sequence[str]) -> dict[str, Any]:
    """Job handles of the named runs from a manifest's job records ({run: {job_id, launcher,
    folder}}); a record that cannot be loaded only means "not active" and is left out."""
    out = {}
    for name in names:
        rec = records.get(name)
        if rec and rec.get("job_id"):
            try:
                out[name] = load_job(rec["launcher"], rec["folder"], str(rec["job_id"]))
            except Exception:  # noqa: BLE001 - a stale record only means "not active"
                continue
    return out


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
