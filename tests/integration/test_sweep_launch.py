"""Launching sweeps for real: the local launcher into a real MLflow server (idempotent relaunch,
status), and the SLURM launcher on a real one-node cluster (requeue resumes, bad partition).

One pair of the debug_2k smoke grid (`grid=smoke_tiny`) shows each property: what is tested is
the launch, not the models. The first sweep of each test is the real `python -m
leviathan.sweep`; relaunches and status run in this process (a subprocess costs seconds of
imports on 2 cores while the jobs train).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from helpers import wait_for
from helpers.sweep import mlflow_runs, status, sweep_cli, sweep_here

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_local_smoke_sweep_is_tracked_idempotent_and_has_status(mlflow_server, tmp_path,
                                                                capsys):
    common = ["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]", "grid.tokens=[1024]",
              "trainer.warmup_steps=1", "sweep.name=smoke-local", f"paths.root_dir={tmp_path}",
              f"tracking.uri={mlflow_server}"]
    out = sweep_cli(common)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    assert "submitted 2 job(s)" in out.stdout and "2 finished, 0 failed" in out.stdout

    c, runs = mlflow_runs(mlflow_server, "smoke-local")
    _c, parents = mlflow_runs(mlflow_server, "smoke-local", kind="sweep")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["arm"] for r in runs} == {"dense", "leviathan"}
    for r in runs:
        tags = r.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["family"] == "smoke" and tags["arm"] in ("dense", "leviathan")
        assert tags["size"] == "164K" and tags["pair"].startswith(tags["size"])
        assert r.data.metrics["final/tokens_seen"] == 1024
    assert {a.path for a in c.list_artifacts(parents[0].info.run_id)} >= {"plan.csv"}
    plan_hashes = {v["config_hash"] for v in json.loads(
        (tmp_path / "sweeps" / "smoke-local" / "manifest.json").read_text())["runs"].values()}
    assert {r.data.tags["config_hash"] for r in runs} == plan_hashes

    rows = status(tmp_path, "smoke-local")
    assert [r["state"] for r in rows] == ["finished"] * 2
    assert all(r["tokens_seen"] == r["tokens"] == 1024 and r["val_loss"] > 0 for r in rows)
    _check_costs(tmp_path, mlflow_server, capsys)

    # a dry run of a changed plan leaves the launched sweep's records alone (issue 34.2: it
    # rewrote manifest.json and configs/, and status then showed lr 0.001 for runs at 0.003)
    sweep_dir = tmp_path / "sweeps" / "smoke-local"
    records = {p: p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
    code, dry = sweep_here([*common, "trainer.lr=1e-3", "sweep.dry_run=true"], capsys)
    assert code == 0, dry[-3000:]
    assert {p: p.read_bytes() for p in records} == records
    assert "2 run(s) changed" in dry and f"{sweep_dir}/dry-runs/" in dry
    (written,) = (sweep_dir / "dry-runs").iterdir()
    assert {p.name for p in written.iterdir()} >= {"plan.csv", "manifest.json", "configs"}
    assert all("lr: 0.001" in p.read_text() for p in (written / "configs").iterdir())
    def kept(rs):  # what the records say ran (not the heartbeat's age, which grows)
        return [{k: v for k, v in r.items() if k != "heartbeat_age_s"} for r in rs]

    assert kept(status(tmp_path, "smoke-local")) == kept(rows)  # still what ran
    assert all(r.data.params["trainer.lr"] == "0.003" for r in runs)

    code, again = sweep_here(common, capsys)  # the same command: nothing to do
    assert code == 0, again[-3000:]
    assert "Nothing to train" in again and again.count("skip ") == 2

    # a run that went missing (deleted from MLflow, scratch gone) is submitted again, alone
    lost = next(r for r in runs if r.data.tags["arm"] == "leviathan")
    c.delete_run(lost.info.run_id)
    shutil.rmtree(tmp_path / "scratch" / "runs" / lost.info.run_name)
    # ... and with sweep.eval=true every finished run is then scored downstream (local tasks)
    from leviathan.eval.tasks import write_demo_tasks

    tasks = write_demo_tasks(tmp_path / "tasks", n=8)[:2]
    code, third = sweep_here([*common, "sweep.eval=true", f"eval.tasks=[{','.join(tasks)}]",
                              f"eval.include_path=[{tmp_path / 'tasks'}]",
                              "eval.include_defaults=false", "eval.offline=true",
                              "eval.bootstrap_iters=0"], capsys)
    assert code == 0, third[-5000:]
    assert "submitted 1 job(s)" in third and third.count("skip ") == 1
    assert "Eval step: 2 job(s)" in third
    _c, runs = mlflow_runs(mlflow_server, "smoke-local")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        for task in tasks:
            assert any(k.startswith(f"eval/{task}/") for k in r.data.metrics), (task, r.data)


def _check_costs(root, uri, capsys):
    """`sweep.status` prints planned vs actual hours (CPU runs: wall time, labelled CPU); a plan
    that takes its costs from this sweep (sweep.costs_from) costs its model from the runs'
    measured steps, leaves the size it did not run assumed, and refuses a missing pilot."""
    from helpers.sweep import plan_for

    from leviathan.sweep.cost_model import CostModelError
    from leviathan.sweep.run_costs import finished_runs
    from leviathan.sweep.status import main as status_main

    done = {r.run: r.summary for r in finished_runs(root / "sweeps" / "smoke-local")}
    assert len(done) == 2 and all(s["cost"]["device"] == "cpu" for s in done.values())
    assert all(s["cost"]["steady_steps"] >= 1 and s["cost"]["step_s"] > 0 for s in done.values())
    capsys.readouterr()
    assert status_main(["smoke-local", f"paths.root_dir={root}", f"tracking.uri={uri}"]) == 0
    text = capsys.readouterr().out
    assert "vs actual hours of the finished runs on the CPU: wall time, not GPU-hours" in text
    assert "| actual CPU-h (wall time) |" in text
    actual = sum(s["cost"]["device_s"] for s in done.values()) / 3600
    total = next(line for line in text.splitlines() if line.startswith("| **total** |"))
    assert total.startswith("| **total** |  | 2 / 2 |") and f"| {actual:.4g} CPU-h |" in total
    for arm in ("dense", "leviathan"):
        assert f"| 164K | {arm} | 1 / 1 |" in text

    pilot = ["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K,smoke_tiny/289K]",
             "grid.tokens=[4096]", "trainer.warmup_steps=1", "sweep.name=from-pilot",
             "sweep.device=cpu", f"tracking.uri={uri}"]
    _, plan = plan_for([*pilot, "sweep.costs_from=smoke-local"], root)
    by_arm = {s["run_key"].rsplit("-", 1)[1]: s["cost"] for s in done.values()}
    for r in plan.runs:
        if r.size == "164K":  # the pilot's model and settings: its measured step
            assert r.cost_source == "measured", r.run
            assert r.gpu_hours == pytest.approx(r.steps * by_arm[r.arm]["step_s"] / 3600), r.run
        else:
            assert r.cost_source == "assumed", r.run
    assert "note: sweep.costs_from: smoke-local: 2 finished run(s)" in plan.mfu_note
    with pytest.raises(CostModelError, match=r"^sweep.costs_from: no sweep 'nosuch' "):
        plan_for([*pilot, "sweep.costs_from=[smoke-local,nosuch]"], root)


def test_slurm_sweep_submits_returns_and_requeue_resumes(slurm_cluster, mlflow_server,
                                                         tmp_path):
    common = ["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]", "grid.tokens=[4096]",
              "trainer.ckpt_every=2",
              "trainer.val_every=4", "trainer.warmup_steps=1", "sweep.name=smoke-slurm",
              "launcher=slurm", "launcher.mem_gb=3", "launcher.timeout_min=20",
              f"paths.root_dir={tmp_path}", f"tracking.uri={mlflow_server}"]
    bad = sweep_cli([*common, "launcher.partition=nosuchpartition"])
    assert bad.returncode == 2 and "launcher.partition" in bad.stderr
    manifest = tmp_path / "sweeps" / "smoke-slurm" / "manifest.json"
    assert json.loads(manifest.read_text())["jobs"] == {}  # nothing was submitted

    run = "smoke-slurm-164K-4.1Ktok-s0-dense"  # requeue this one mid-run: its first attempt
    # holds at step 2 until a preemption signal comes, so the requeue never races its end
    out = sweep_cli(common, env={"LEVIATHAN_REHEARSE_PREEMPTION": f"{run}@2"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    assert "python -m leviathan.sweep.status smoke-slurm" in out.stdout
    jobs = json.loads(manifest.read_text())["jobs"]
    assert len(jobs) == 2 and len({j["job_id"].split("_")[0] for j in jobs.values()}) == 1
    # the sweep submitted one array and returned: the held run cannot have finished
    assert next(r for r in status(tmp_path, "smoke-slurm") if r["run"] == run)["state"] in (
        "queued", "running")

    job_id = jobs[run]["job_id"]
    logs = tmp_path / "scratch" / "submitit" / "smoke-slurm"

    def job_log() -> str:
        return "".join(p.read_text(errors="replace") for p in logs.glob(f"{job_id}_*_log.out"))

    wait_for(lambda: "holding at step 2" in job_log(), 900, f"{run} to reach step 2")
    subprocess.run(["scontrol", "requeue", job_id], check=True)

    def restarted():  # SLURM holds a requeued job ~2 min: release it until it runs again
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"],
                       capture_output=True)
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
        state = re.search(r"JobState=(\S+)", out.stdout)
        # after the requeue it is COMPLETING, then PENDING until released, then RUNNING
        return "Restarts=1" in out.stdout and state and state[1] in ("RUNNING", "COMPLETED")

    wait_for(restarted, 300, "the requeued job to restart", poll=2.0)
    wait_for(lambda: all(r["state"] in ("finished", "failed")
                          for r in status(tmp_path, "smoke-slurm")), 1200,
              "every run of the sweep to end", poll=2.0)
    rows = status(tmp_path, "smoke-slurm")
    assert [r["state"] for r in rows] == ["finished"] * 2, rows

    c, runs = mlflow_runs(mlflow_server, "smoke-slurm")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    # the sweep returned at once; the job that ended last ended its parent run (issue 34.9)
    wait_for(lambda: mlflow_runs(mlflow_server, "smoke-slurm", kind="sweep")[1][0].info.status
             == "FINISHED", 60, "the sweep's parent run to end", poll=1.0)
    for r in runs:  # every run landed with its tags
        assert r.data.tags["family"] == "smoke" and r.data.tags["pair"] in r.info.run_name
        assert r.data.metrics["final/tokens_seen"] == 4096
    requeued = next(r for r in runs if r.info.run_name == run)  # the same MLflow run continued
    steps = sorted(m.step for m in c.get_metric_history(requeued.info.run_id, "train/loss"))
    assert steps == list(range(1, 9))  # 4096 tokens / 512 per step, each step once
    assert "resuming from" in job_log()  # the second attempt resumed rather than restarted
