"""A real one-node SLURM cluster (slurm/cluster.sh) driven through submitit: job arrays, external
requeue and the pre-emption signal resuming from a checkpoint, pre-submit checks."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from leviathan.sweep.launcher import (
    LauncherError,
    ResumableCall,
    job_state,
    load_job,
    make_executor,
    submit_array,
    wait,
)
from leviathan.sweep.local_cluster import CLUSTER_SH
from leviathan.sweep.selfcheck import count_steps, main
from leviathan.sweep.slurm_check import slurm_states

pytestmark = pytest.mark.integration


def _slurm(tmp_path, **over):
    cfg = {"name": "slurm", "partition": "debug", "cpus_per_task": 1, "mem_gb": 0.25,
           "timeout_min": 10, "signal_delay_s": 30, "poll_s": 0.5,
           "folder": str(tmp_path / "submitit")}
    return {**cfg, **over}


def _wait_for_count(path: Path, at_least: int, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not (path.exists() and json.loads(path.read_text())["count"] >= at_least):
        assert time.time() < deadline, f"{path} never reached {at_least}"
        time.sleep(0.1)


def _wait_pending(job_id: str, timeout: float = 60.0) -> None:
    """After a requeue: wait until the job is PENDING again, then lift SLURM's ~2 min delay
    before a requeued job may start (BeginTime), so the test does not sit it out."""
    deadline = time.time() + timeout
    while slurm_states([job_id]).get(job_id) != "PENDING":
        assert time.time() < deadline, f"job {job_id} was not requeued: {slurm_states([job_id])}"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"], check=True)


def test_cluster_up_is_idempotent_and_runs_plain_jobs(slurm_cluster, tmp_path):
    run_dir = Path(slurm_cluster.slurm_conf).parent.parent / "run"
    pids = {f.name: f.read_text() for f in run_dir.glob("slurm*.pid")}
    again = subprocess.run(["bash", str(CLUSTER_SH), "up"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "slurmctld already running" in again.stdout
    assert len(pids) == 2 and pids == {f.name: f.read_text() for f in run_dir.glob("slurm*.pid")}
    states = set(subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                check=True).stdout.split())
    assert states & {"idle", "mixed", "allocated", "completing"}, states  # up, not drained
    out = subprocess.run(["srun", "-n1", "--mem=100M", "hostname"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == os.uname().nodename
    log = tmp_path / "wrap.out"
    jid = subprocess.run(["sbatch", "--parsable", "--mem=100M", "-o", str(log), "--wrap",
                          "echo hello from $SLURM_JOB_ID"], capture_output=True, text=True,
                         check=True).stdout.strip()
    deadline = time.time() + 60
    while slurm_states([jid]).get(jid) != "COMPLETED":
        assert time.time() < deadline, slurm_states([jid])
        time.sleep(0.2)
    assert log.read_text().strip() == f"hello from {jid}"


@pytest.mark.slow
def test_submitit_job_array_finishes_with_results(slurm_cluster, tmp_path):
    ex = make_executor(_slurm(tmp_path, array_parallelism=2))
    fns = [ResumableCall(count_steps, 5 + i, str(tmp_path / f"a{i}.json"), 0.05) for i in range(3)]
    jobs = submit_array(ex, fns)
    base = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{base}_{i}" for i in range(3)]  # one array
    states = wait(jobs, poll_s=0.5)
    assert states == ["finished"] * 3, [j.stderr() for j in jobs]
    assert [j.result()["count"] for j in jobs] == [5, 6, 7]
    ids = [j.job_id for j in jobs]
    deadline = time.time() + 30  # the result pickle comes a moment before SLURM's COMPLETED
    while set(slurm_states(ids).values()) != {"COMPLETED"}:
        assert time.time() < deadline, slurm_states(ids)
        time.sleep(0.2)
    again = load_job("slurm", ex.folder, jobs[1].job_id)  # as `status` does from a manifest
    assert job_state(again) == "finished" and again.result()["count"] == 6


@pytest.mark.slow
def test_requeued_jobs_resume_from_their_checkpoint(slurm_cluster, tmp_path):
    """Job 0 is requeued from outside (`scontrol requeue`: killed, rerun); job 1 gets USR2 as at
    pre-emption or before its time limit (submitit calls checkpoint() and requeues it). Both
    reruns continue counting from the saved count instead of starting again from 0."""
    n = 40  # the first attempts hold at 10 until SLURM kills or signals them
    files = [tmp_path / "ext.json", tmp_path / "sig.json"]
    jobs = submit_array(make_executor(_slurm(tmp_path)),
                        [ResumableCall(count_steps, n, str(f), 0.05, hold_at=10) for f in files])
    for f in files:
        _wait_for_count(f, 10)
    subprocess.run(["scontrol", "requeue", jobs[0].job_id], check=True)
    subprocess.run(["scancel", "--signal=USR2", jobs[1].job_id], check=True)
    for job in jobs:
        _wait_pending(job.job_id)
        assert job_state(job) == "queued"
    assert wait(jobs, poll_s=0.5) == ["finished", "finished"], [j.stderr() for j in jobs]
    for job in jobs:
        out = job.result()
        assert out["count"] == n
        assert out["starts"] == [0, 10], out  # resumed where it was stopped, not restarted
    state = json.loads(files[0].read_text())
    assert state["restart_count"] == 1  # SLURM_RESTART_COUNT of the second attempt


def _job_ids() -> set[str]:
    """The cluster's job ids (an array task's `130_1` counts as job 130). squeue's order and an
    array's rows change while an earlier test's jobs finish or requeue; a new submission is a
    new id."""
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i"], capture_output=True,
                         text=True, check=True).stdout.split()
    return {i.split("_")[0] for i in out}


def test_bad_partition_fails_before_submitting(slurm_cluster, tmp_path):
    before = _job_ids()
    with pytest.raises(LauncherError) as err:
        make_executor(_slurm(tmp_path, partition="nonexistent"))
    msg = str(err.value)
    assert "launcher.partition" in msg and "'nonexistent'" in msg and "debug" in msg
    assert _job_ids() <= before and not (tmp_path / "submitit").exists()  # nothing submitted


@pytest.mark.parametrize(("key", "value"), [("mem_gb", 10_000), ("cpus_per_task", 512),
                                            ("gpus_per_node", 1), ("nodes", 2)])
def test_resources_the_partition_lacks_fail_naming_the_key(slurm_cluster, tmp_path, key, value):
    with pytest.raises(LauncherError, match=f"launcher.{key}: .*partition 'debug'"):
        make_executor(_slurm(tmp_path, **{key: value}))


@pytest.mark.slow
def test_selfcheck_cli(slurm_cluster, tmp_path, capsys):
    rc = main(["--folder", str(tmp_path / "check"), "--jobs", "2", "partition=debug",
               "mem_gb=0.25", "poll_s=0.5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("finished {'count': 20") == 2
