"""Launch a planned sweep through submitit: idempotent, one MLflow parent run, local or SLURM.

Relaunching the same command skips runs already finished (same config hash) and runs whose job
is still queued or running; failed or missing runs are submitted again (and resume from their
checkpoints); `sweep.force=true` reruns everything from scratch.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leviathan.sweep.plan import SweepPlan, write_json
from leviathan.tracking.runs import RunFolder

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running", "unknown")


def prepare_tracking(plan: SweepPlan, cfg: Any):
    """Reach (or, when local and allowed, start) the tracking server and check the login
    (TrackingAuthError, naming the fix, before anything is submitted); return (uri without
    userinfo, server)."""
    from leviathan.tracking.credentials import use_credentials
    from leviathan.tracking.server import check_reachable, ensure_local_server, is_local, is_up

    uri = use_credentials(str(cfg.tracking.uri), cfg.tracking.get("credentials_file"))
    server = None
    if is_local(uri) and not is_up(uri) and plan.sweep.get("start_server", True):
        server = ensure_local_server(uri, cfg.paths.mlflow_dir)
        log.info(f"MLflow server started at {uri} (pid {server.process.pid}, store "
                 f"{server.store_dir}); it keeps running after the sweep (`make dashboard` "
                 "reuses it).")
    else:
        check_reachable(uri, timeout=float(cfg.tracking.connect_timeout_s))
    from leviathan.tracking.credentials import check_access

    check_access(uri)
    return uri, server


def run_folder(conf: dict[str, Any]) -> Path:
    """Where training keeps a run's checkpoints and MLflow run id (leviathan.tracking.runs)."""
    from leviathan.training.config import config_hash

    return RunFolder.of_config(conf, config_hash(conf)).path


@dataclass
class SweepTracking:
    """The sweep's MLflow side: client, experiment, parent run."""

    uri: str
    client: Any
    experiment_id: str
    parent_id: str


def open_tracking(plan: SweepPlan, cfg: Any, sweep_dir: Path) -> SweepTracking:
    """Reach the server (starting the local one if allowed), open the sweep's parent run and
    attach the plan to it."""
    from leviathan.tracking import runs
    from leviathan.tracking.credentials import USER, TrackingAuthError, forbidden, is_denied

    uri, _server = prepare_tracking(plan, cfg)
    c = runs.client(uri)
    try:
        exp = runs.experiment_id(c, str(cfg.tracking.experiment))
        parent = runs.parent_run(c, exp, plan.name, {runs.Tag.FAMILY: plan.grid["family"],
                                                     "grid": plan.grid["name"]})
        if parent.info.status != "RUNNING":
            c.update_run(parent.info.run_id, status="RUNNING")
        # the job that ends the last of them ends the parent (tracking.mlflow_ops.end_sweep)
        c.set_tag(parent.info.run_id, runs.Tag.PLANNED_RUNS, str(len(plan.runs)))
        c.log_artifact(parent.info.run_id, str(sweep_dir / "plan.csv"))
    except Exception as e:
        if not is_denied(e):
            raise
        import os

        raise TrackingAuthError(forbidden(uri, os.environ.get(USER), "create the sweep's "
                                          f"runs in experiment {cfg.tracking.experiment!r}")
                                ) from None
    return SweepTracking(uri, c, exp, parent.info.run_id)


def select_runs(plan: SweepPlan, trk: SweepTracking, manifest: dict, force: bool
                ) -> tuple[list[Any], list[tuple[str, str]]]:
    """(runs to submit, [(run, why skipped)]): finished (same config hash in MLflow) and
    still queued/running runs are skipped unless `force`. First the outboxes that ended jobs
    left are sent (a finished run's final status may be among them); a `lost` run (its job
    gone, its MLflow run left RUNNING: leviathan.sweep.liveness) is resubmitted and resumes."""
    from leviathan.sweep.launcher import job_states, load_jobs
    from leviathan.sweep.liveness import run_state
    from leviathan.tracking import runs
    from leviathan.tracking.sync import sync_runs

    handles = load_jobs(manifest.get("jobs", {}), [r.run for r in plan.runs])
    active = dict(zip(handles, job_states(list(handles.values())), strict=True))
    if not force:
        sync_runs({r.run: run_folder(r.config) for r in plan.runs
                   if active.get(r.run) not in ("queued", "running")}, uri=trk.uri)
    train_runs = runs.training_runs(trk.client, trk.experiment_id, plan.name)
    done = set() if force else runs.finished_hashes(train_runs)
    latest: dict[str, Any] = {}
    for run in train_runs:  # newest first
        latest.setdefault(run.data.tags.get(runs.Tag.RUN_NAME) or run.info.run_name, run)
    todo, skipped = [], []
    for r in plan.runs:
        state = run_state(active.get(r.run), latest.get(r.run))
        if r.config_hash in done:
            skipped.append((r.run, "finished"))
        elif state in ACTIVE and not force:
            job = manifest.get("jobs", {}).get(r.run)
            skipped.append((r.run, f"{state} (job {job['job_id']})" if job else state))
        else:
            if state == "lost":
                log.info(f"  resume {r.run}: lost (its job is gone, its MLflow run was left "
                         "RUNNING)")
            todo.append(r)
    return todo, skipped


def job_groups(plan: SweepPlan, todo: list[Any]) -> list[tuple[Any, list[Any]]]:
    """[(run, its branches to train)]: one job per run to train and per main run whose WSD-S
    branches are to train (the main itself returns at once when finished)."""
    by_name = {r.run: r for r in plan.runs}
    groups: dict[str, list[Any]] = {}
    for r in todo:
        groups.setdefault(r.branch_of or r.run, [])
        if r.branch_of:
            groups[r.branch_of].append(r)
    return [(by_name[name], members) for name, members in groups.items()]


def submit_runs(executor: Any, groups: list[tuple[Any, list[Any]]], parent_id: str, *,
                force: bool, requeue: bool) -> list[Any]:
    """Build each run's data once, then submit one job per group (one array on SLURM)."""
    from omegaconf import OmegaConf

    from leviathan.data import ensure_data
    from leviathan.sweep.job import run_job
    from leviathan.sweep.launcher import ResumableCall, submit_array

    for data_cfg in {json.dumps(r.config["data"], sort_keys=True) for r, _ in groups}:
        ensure_data(OmegaConf.create(json.loads(data_cfg)))  # build demo data once, not per job
    fns = []
    for main, branches in groups:
        confs = []
        for r in (main, *branches):
            conf = copy.deepcopy(r.config)
            conf["tracking"]["parent_run_id"] = parent_id
            if force:  # start over: drop the old checkpoints, so a requeued attempt resumes
                shutil.rmtree(run_folder(conf), ignore_errors=True)
            confs.append(conf)
        fns.append(ResumableCall(run_job, confs[0], confs[1:], requeue=requeue))
    return submit_array(executor, fns)


def record_jobs(manifest: dict, groups: list[tuple[Any, list[Any]]], jobs: list[Any],
                launcher: str, folder: Path) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for (main, branches), job in zip(groups, jobs, strict=True):
        for r in (main, *branches):
            manifest.setdefault("jobs", {})[r.run] = {
                "job_id": getattr(job, "job_id", None), "launcher": launcher,
                "folder": str(folder.absolute()), "submitted_at": now,
                "config_hash": r.config_hash}


def launch(plan: SweepPlan, cfg: Any, sweep_dir: Path) -> int:
    """Submit what is not finished yet; wait with progress for local jobs. Returns 0/1."""
    from leviathan.sweep.launcher import make_executor, to_launcher_config

    lcfg = to_launcher_config(cfg.launcher)
    folder = Path(str(cfg.launcher.folder)) / plan.name
    executor = make_executor(cfg.launcher, folder)  # SLURM: checked against sinfo here
    partition = getattr(executor, "partition", None)
    if partition is not None:  # a GPU run on a GPU partition asks for its GPUs
        from leviathan.training.topology import check_launch

        for r in plan.runs:
            check_launch(lcfg, r.config["trainer"], r.run, partition_gpus=partition.max_gpus)
    trk = open_tracking(plan, cfg, sweep_dir)
    manifest_path = sweep_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["parent_run_id"] = trk.parent_id
    force = bool(plan.sweep.get("force"))
    todo, skipped = select_runs(plan, trk, manifest, force)
    for run, why in skipped:
        log.info(f"  skip {run}: {why}")
    if not todo:
        log.info(f"Nothing to train: all {len(plan.runs)} runs of sweep {plan.name} are "
                 "finished or active. `sweep.force=true` reruns them.")
        write_json(manifest_path, manifest)
        if not any(w != "finished" for _, w in skipped):
            trk.client.set_terminated(trk.parent_id, status="FINISHED")
        if plan.sweep.get("eval"):
            return launch_eval(plan, cfg, manifest, manifest_path, after=[])
        return 0

    groups = job_groups(plan, todo)
    jobs = submit_runs(executor, groups, trk.parent_id, force=force, requeue=lcfg.requeue)
    record_jobs(manifest, groups, jobs, lcfg.name, folder)
    write_json(manifest_path, manifest)
    log.info(f"Sweep {plan.name}: submitted {len(jobs)} job(s) with launcher={lcfg.name}, "
             f"skipped {len(skipped)}. MLflow parent run {trk.parent_id} at {trk.uri}.")
    wait = plan.sweep.get("wait")
    if not (lcfg.name == "local" if wait is None else wait):
        ids = ", ".join(str(getattr(j, "job_id", "?")) for j in jobs)
        log.info(f"Job ids: {ids}\nStatus: python -m leviathan.sweep.status {plan.name}")
        if plan.sweep.get("eval"):
            launch_eval(plan, cfg, manifest, manifest_path, after=jobs,
                        pending={r.run for r in todo})
        return 0
    code = _wait_local(plan, groups, jobs, manifest, manifest_path, trk.client, trk.parent_id)
    if plan.sweep.get("eval"):
        code = max(code, launch_eval(plan, cfg, manifest, manifest_path, after=[]))
    return code


def launch_eval(plan: SweepPlan, cfg: Any, manifest: dict, manifest_path: Path, *,
                after: list[Any], pending: set[str] | None = None) -> int:
    """The eval step: one job per run (lm-eval on its checkpoint), after the training jobs.

    SLURM: an array that starts when the training array has ended (`afterany`), submitted now;
    local: run here, with progress. Only finished runs (or those training now) are evaluated;
    already evaluated ones are skipped by the job itself."""
    from omegaconf import OmegaConf

    from leviathan.sweep.job import eval_job
    from leviathan.sweep.launcher import ResumableCall, make_executor, submit_array
    from leviathan.sweep.launcher_config import slurm_parameters, to_launcher_config

    lcfg = to_launcher_config(cfg.launcher)
    folder = Path(str(cfg.launcher.folder)) / plan.name / "eval"
    executor = make_executor(cfg.launcher, folder)
    train_ids = sorted({str(j.job_id).split("_")[0] for j in after if getattr(j, "job_id", None)})
    if lcfg.name == "slurm" and train_ids:
        extra = dict(slurm_parameters(lcfg)["additional_parameters"])
        extra["dependency"] = "afterany:" + ":".join(train_ids)
        executor.update_parameters(additional_parameters=extra)
    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    pending = pending or set()  # runs whose training jobs (`after`) were just submitted
    runs = [r for r in plan.runs
            if r.run in pending or RunFolder(run_folder(r.config)).finished()]
    fns = [ResumableCall(eval_job, str(run_folder(r.config)), eval_cfg,
                         requeue=lcfg.requeue) for r in runs]
    jobs = submit_array(executor, fns)
    manifest["eval_jobs"] = {r.run: {"job_id": getattr(j, "job_id", None), "folder":
                                     str(folder.absolute()), "launcher": lcfg.name}
                             for r, j in zip(runs, jobs, strict=True)}
    write_json(manifest_path, manifest)
    log.info(f"Eval step: {len(jobs)} job(s) (tasks {', '.join(map(str, cfg.eval.tasks))})"
             + (f", starting after job(s) {', '.join(train_ids)}" if train_ids else ""))
    if lcfg.name == "slurm" or not jobs:
        return 0
    from leviathan.sweep.launcher import wait

    states = wait(jobs, poll_s=1.0, on_change=lambda i, st: log.info(f"  eval {runs[i].run}: {st}"))
    for r, j, st in zip(runs, jobs, states, strict=True):
        if st == "finished":
            res = j.result()
            for task, why in (res.get("missing") or {}).items():
                log.info(f"  eval {r.run}: {task} skipped: {why}")
    return 0 if all(st == "finished" for st in states) else 1


def _wait_local(plan, groups, jobs, manifest, manifest_path, c, parent_id) -> int:
    todo = [main for main, _ in groups]
    from tqdm import tqdm

    from leviathan.sweep.launcher import wait

    bar = tqdm(total=len(jobs), desc=f"sweep {plan.name}", unit="run", dynamic_ncols=True)
    last_line: dict[int, str] = {}
    last_peek = [0.0]

    def on_change(i: int, state: str) -> None:
        if state in ("finished", "failed"):
            bar.update(1)
        # ids are known once a queued local job starts
        for r in (groups[i][0], *groups[i][1]):
            manifest["jobs"][r.run]["job_id"] = getattr(jobs[i], "job_id", None)
            manifest["jobs"][r.run]["state"] = state
        bar.write(f"  {todo[i].run}: {state}")

    def peek() -> None:  # the running jobs' own progress lines (their logs)
        if time.monotonic() - last_peek[0] < 5:
            return
        last_peek[0] = time.monotonic()
        for i, job in enumerate(jobs):
            line = _last_log_line(job)
            if line and line != last_line.get(i):
                last_line[i] = line
                bar.write(f"    [{todo[i].run}] {line}")

    try:
        states = wait(jobs, poll_s=1.0, on_change=lambda i, s: (on_change(i, s), peek()))
    except KeyboardInterrupt:
        bar.close()
        log.info("Interrupted: the running jobs were stopped; they resume from their checkpoints "
                 "when the same command is run again.")
        write_json(manifest_path, manifest)
        c.set_terminated(parent_id, status="KILLED")
        raise
    bar.close()
    write_json(manifest_path, manifest)
    failed = [todo[i].run for i, s in enumerate(states) if s != "finished"]
    for run in failed:
        rec = manifest["jobs"][run]
        log.info(f"  FAILED {run}: logs in {rec['folder']} (job {rec['job_id']})")
    c.set_terminated(parent_id, status="FAILED" if failed else "FINISHED")
    log.info(f"Sweep {plan.name}: {len(jobs) - len(failed)} finished, {len(failed)} failed.")
    return 1 if failed else 0


def _last_log_line(job: Any) -> str | None:
    inner = getattr(job, "job", job)
    if inner is None or not hasattr(inner, "paths"):
        return None
    for path in (inner.paths.stderr, inner.paths.stdout):
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 4096))
                text = f.read().decode(errors="replace")
        except OSError:
            continue
        lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:160]
    return None
