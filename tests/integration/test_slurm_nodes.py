"""Runs across nodes on a real two-node SLURM cluster on this machine (slurm/cluster.sh up
--nodes 2: each slurmd in its own network namespace, one session start): a 2-node x 1-task DDP
job through the sweep's SLURM launcher equals a one-process run; USR2 -> requeue -> an exact
resume; a topology mismatch is refused before submission and at job start; a killed rank ends
the job within trainer.ddp_timeout_s, named.

One dense run of the debug_2k smoke grid, 4 steps of 2 x 4 sequences: what is tested is the
launch, not the model. The jobs log to an `mlflow server` on the nodes' bridge address
(`nodes_mlflow`): the session's usual server listens on this host's loopback only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, wait_for
from helpers.sweep import mlflow_runs, plan_for, status, sweep_cli
from helpers.train import history, one_value_per_step, tiny

from leviathan.sweep.slurm_check import slurm_states

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 4
COMMON = ["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]", "~grid.arms.leviathan",
          "grid.tokens=[2048]", "trainer.micro_batch=4", "trainer.warmup_steps=1",
          "trainer.val_every=2", "trainer.ckpt_every=2", "trainer.ddp_timeout_s=60",
          "launcher=slurm", "launcher.mem_gb=2", "launcher.timeout_min=20"]
TWO_NODES = ["launcher.nodes=2", "trainer.num_nodes=2"]


def _run(sweep: str) -> str:
    return f"{sweep}-164K-2.05Ktok-s0-dense"


@pytest.fixture
def two_nodes(slurm_two_nodes, monkeypatch):
    """The two-node cluster for this test's sbatch/squeue/scontrol (the one-node cluster's
    tests set SLURM_CONF for the whole session; this one only for the test)."""
    monkeypatch.setenv("SLURM_CONF", slurm_two_nodes.slurm_conf)
    return slurm_two_nodes


@pytest.fixture(scope="module")
def one_process(slurm_two_nodes, nodes_mlflow, tmp_path_factory):
    """The same run in one process (trainer.num_nodes=1: 2 accumulated micro-batches of 4 where
    the two ranks take one each): its train/loss and val/loss per step."""
    from omegaconf import OmegaConf

    from leviathan.training.run import train

    root = tmp_path_factory.mktemp("one-process")
    run = [o for o in COMMON if not o.startswith("launcher")]
    _cfg, plan = plan_for([*run, "sweep.name=one", f"tracking.uri={nodes_mlflow}"], root)
    summary = train(OmegaConf.create(plan.runs[0].config))
    return {key: history(nodes_mlflow, summary["run_id"], key)
            for key in ("train/loss", "val/loss")}


def _launch(tmp_path: Path, uri: str, sweep: str, env: dict | None = None) -> str:
    """The real `python -m leviathan.sweep` on two nodes; returns the run's job id."""
    out = sweep_cli([*COMMON, *TWO_NODES, f"sweep.name={sweep}", f"paths.root_dir={tmp_path}",
                     f"tracking.uri={uri}"], env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    jobs = json.loads((tmp_path / "sweeps" / sweep / "manifest.json").read_text())["jobs"]
    return jobs[_run(sweep)]["job_id"]


def _logs(tmp_path: Path, sweep: str, job_id: str, rank: int, ext: str = "*") -> str:
    folder = tmp_path / "scratch" / "submitit" / sweep
    return "".join(p.read_text(errors="replace")
                   for p in sorted(folder.glob(f"{job_id}_{rank}_log.{ext}")))


def _ended(job_id: str) -> str | None:
    state = slurm_states([job_id]).get(job_id, "")
    return state if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") else None


def _assert_matches(uri: str, run_id: str, reference: dict) -> None:
    loss = one_value_per_step(uri, run_id, "train/loss")  # every step once
    want = [v for _, v in reference["train/loss"]]
    assert len(loss) == len(want) == STEPS
    torch.testing.assert_close(torch.tensor(loss), torch.tensor(want), rtol=1e-4, atol=1e-5)
    val = history(uri, run_id, "val/loss")
    assert [s for s, _ in val] == [s for s, _ in reference["val/loss"]] == [2, 4]
    torch.testing.assert_close(torch.tensor([v for _, v in val]),
                               torch.tensor([v for _, v in reference["val/loss"]]),
                               rtol=1e-4, atol=1e-5)


def test_two_node_ddp_job_matches_one_process(two_nodes, nodes_mlflow, one_process, tmp_path):
    job_id = _launch(tmp_path, nodes_mlflow, "nodes-ddp")
    state = wait_for(lambda: _ended(job_id), 600, "the two-node job to end", poll=1.0)
    rank0, rank1 = (_logs(tmp_path, "nodes-ddp", job_id, r) for r in (0, 1))
    assert state == "COMPLETED", (rank0 + rank1)[-5000:]
    # one task per node, each a rank of one world of two
    assert f"hostname={two_nodes.nodes[0]}" in rank0 and f"hostname={two_nodes.nodes[1]}" in rank1
    assert "MEMBER: 1/2" in rank0 and "MEMBER: 2/2" in rank1
    assert [r["state"] for r in status(tmp_path, "nodes-ddp")] == ["finished"]
    _c, runs = mlflow_runs(nodes_mlflow, "nodes-ddp")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["plan.world_size"] == "2"
    assert runs[0].data.params["plan.accumulation"] == "1"
    _assert_matches(nodes_mlflow, runs[0].info.run_id, one_process)


def _restarted(job_id: str) -> bool:
    """After the requeue: release SLURM's ~2 min hold (BeginTime) until the job runs again."""
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"],
                   capture_output=True)
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
    state = re.search(r"JobState=(\S+)", out.stdout)
    return "Restarts=1" in out.stdout and bool(state) and state[1] in (
        "RUNNING", "COMPLETED", "FAILED")


def test_two_node_job_requeued_by_usr2_resumes_exactly(two_nodes, nodes_mlflow, one_process,
                                                       tmp_path):
    """USR2 (what SLURM sends before the time limit, `scancel --signal=USR2`) reaches both
    ranks held at step 2: they checkpoint, rank 0 requeues the job (submitit), the next attempt
    resumes on both nodes, each rank from its own data position, into the same MLflow run."""
    sweep = "nodes-resume"
    job_id = _launch(tmp_path, nodes_mlflow, sweep,
                     env={"LEVIATHAN_REHEARSE_PREEMPTION": f"{_run(sweep)}@2"})
    wait_for(lambda: "holding at step 2" in _logs(tmp_path, sweep, job_id, 0), 600,
             "rank 0 to hold at step 2")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for(lambda: _restarted(job_id), 300, "the requeued job to restart", poll=1.0)
    state = wait_for(lambda: _ended(job_id), 600, "the second attempt to end", poll=1.0)
    rank0, rank1 = (_logs(tmp_path, sweep, job_id, r) for r in (0, 1))
    assert state == "COMPLETED", (rank0 + rank1)[-6000:]
    assert "preempted at step 2" in rank0 and rank0.count("resuming from") == 1
    _c, runs = mlflow_runs(nodes_mlflow, sweep)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the same run, continued
    _assert_matches(nodes_mlflow, runs[0].info.run_id, one_process)


def _jobs_writing_to(folder: Path) -> list[str]:
    """Jobs the cluster knows (running or ended) whose output goes under `folder` (other
    tests' jobs may be submitted meanwhile)."""
    out = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i %o"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    return [ln for ln in out if str(folder) in ln]


def test_topology_mismatch_is_refused_before_submission_and_at_job_start(
        two_nodes, tmp_path, data_dir):
    out = sweep_cli([*COMMON, "launcher.nodes=2", "sweep.name=nodes-bad",  # num_nodes left 1
                     f"paths.root_dir={tmp_path}", "tracking.uri=http://127.0.0.1:9"])
    assert out.returncode == 2, (out.stdout + out.stderr)[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "launcher.nodes x launcher.tasks_per_node = 2 x 1" in \
        line and "trainer.num_nodes x trainer.devices = 1 x 1" in line, out.stderr
    assert not _jobs_writing_to(tmp_path) and not (tmp_path / "scratch" / "submitit").exists()

    # at job start: `python -m leviathan.train` on 2 tasks that expects 1 rank, under srun
    state, outputs = _sbatch_train(tmp_path, tiny(data_dir, tmp_path / "scratch",
                                                  "http://127.0.0.1:9"))
    assert state == "FAILED"
    for text in outputs:
        assert ("error: SLURM started 2 tasks on 2 nodes (SLURM_NTASKS, SLURM_NNODES: "
                "launcher.nodes x launcher.tasks_per_node), but trainer.num_nodes x "
                "trainer.devices = 1 x 1 = 1 rank") in text, text[-3000:]
        assert "Traceback" not in text and "Initializing distributed" not in text


def _sbatch_train(tmp_path: Path, args: list[str], env: str = "") -> tuple[str, list[str]]:
    """`python -m leviathan.train` as 2 nodes x 1 task under srun (sbatch: srun from this host
    would give the nodes this host's loopback address to call back); (final state, each task's
    output)."""
    train = " ".join([sys.executable, "-m", "leviathan.train", *args])
    log = tmp_path / "task-%t.out"
    jid = subprocess.run(["sbatch", "--parsable", "-N2", "--ntasks-per-node=1", "--mem=1G",
                          f"--chdir={REPO}", "-o", str(tmp_path / "batch.out"), "--wrap",
                          f"{env} srun --kill-on-bad-exit=1 -o {log} {train}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    state = wait_for(lambda: _ended(jid), 300, f"job {jid} to end")
    return state, [(tmp_path / f"task-{r}.out").read_text() for r in (0, 1)]


def test_ranks_on_a_loopback_interface_fail_with_one_line_naming_the_setting(two_nodes, tmp_path,
                                                                             data_dir):
    """A node whose host name resolves to 127.0.0.1 makes Gloo advertise a loopback address
    (here forced: GLOO_SOCKET_IFNAME=lo): the ranks meet at MASTER_ADDR but cannot connect to
    each other; the job ends with one line naming GLOO_SOCKET_IFNAME, not a hang. The rank still
    waiting in the rendezvous stops on srun's SIGTERM (launcher.kill_on_bad_exit)."""
    args = tiny(data_dir, tmp_path / "scratch", "http://127.0.0.1:9", "trainer.num_nodes=2",
                "trainer.ddp_timeout_s=30", "tracking.enabled=false")
    t0 = time.monotonic()
    state, (rank0, rank1) = _sbatch_train(tmp_path, args, env="export GLOO_SOCKET_IFNAME=lo;")
    assert state == "FAILED" and time.monotonic() - t0 < 120, rank0 + rank1
    failed = 0
    for rank, out in enumerate((rank0, rank1)):
        errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
        if not errors:  # still waiting for its peer in C++: it honours srun's SIGTERM
            assert "received SIGTERM while starting (before the first training step)" in out
            continue
        failed += 1  # the rank whose connection was refused (Gloo decides which connects)
        assert errors[0].startswith(f"error: rank {rank} of 2 could not meet its peers at "
                                    f"{two_nodes.nodes[0]}:")
        assert "remote=[127.0.0.1]" in errors[0] and "GLOO_SOCKET_IFNAME" in errors[0]
    assert failed >= 1, rank0 + rank1


def _task_pid(job_id: str, rank: int) -> int | None:
    """The pid of task `rank` of submitit job `job_id` ("<id>", or "<array>_<index>"), from
    /proc (every node is a namespace of this machine)."""
    array, _, index = job_id.partition("_")
    want = {f"SLURM_PROCID={rank}".encode()} | (
        {f"SLURM_ARRAY_JOB_ID={array}".encode(), f"SLURM_ARRAY_TASK_ID={index}".encode()}
        if index else {f"SLURM_JOB_ID={job_id}".encode()})
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            if b"submitit.core._submit" not in cmd or cmd[0].endswith(b"srun"):
                continue
            env = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:  # not a process, or gone
            continue
        if want <= env:
            return int(proc.name)
    return None


def test_killed_rank_ends_the_job_within_the_rendezvous_timeout(two_nodes, nodes_mlflow,
                                                                tmp_path):
    sweep = "nodes-kill"
    job_id = _launch(tmp_path, nodes_mlflow, sweep,
                     env={"LEVIATHAN_REHEARSE_PREEMPTION": f"{_run(sweep)}@2"})
    wait_for(lambda: "holding at step 2" in _logs(tmp_path, sweep, job_id, 1), 600,
             "rank 1 to hold at step 2")
    pid = wait_for(lambda: _task_pid(job_id, 1), 30, "rank 1's process")
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    state = wait_for(lambda: _ended(job_id), 60, "the job to end after rank 1 was killed",
                     poll=0.5)
    took = time.monotonic() - t0
    assert took < 60 and state == "FAILED", (took, state)  # trainer.ddp_timeout_s=60
    err = _logs(tmp_path, sweep, job_id, 0, "err")
    assert f"srun: error: {two_nodes.nodes[1]}: task 1: Killed" in err, err[-3000:]
    assert "Terminating StepId" in err  # srun --kill-on-bad-exit=1 (launcher.kill_on_bad_exit)
    print(f"\njob ended {took:.1f} s after rank 1 was killed")
