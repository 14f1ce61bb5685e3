"""A sweep's tracking with real services: a job that dies with its node leaves a lost run, which
`status --sync` and the relaunch recover into the same MLflow run; a sweep through MLflow on a
real PostgreSQL (`make tracking-server`); `bench tracking` in small."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, wait_for
from helpers.sweep import mlflow_runs, sweep_cli

from leviathan.tracking.outbox import JOURNAL_FILE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def status(root: Path, sweep: str, uri: str) -> list[dict]:
    """sweep.status's rows, in this process (a subprocess costs seconds of imports per call)."""
    from leviathan.sweep.status import collect

    return collect(root / "sweeps" / sweep, uri, "leviathan")


def test_crashed_job_shows_lost_is_synced_and_resumes_into_its_run(mlflow_server, tmp_path,
                                                                   capsys):
    """kill -9 of the whole sweep (driver and job: a node crash) after the first job's first
    checkpoint. Its MLflow run stays RUNNING: status says lost, at once (its job is dead) and,
    once the launcher's record is gone too, from the missed heartbeats. `--sync` sends its
    outbox (metrics flush only hourly here); the relaunch resumes it into the same run. One
    small dense run: what is tested is the tracking, not the models."""
    common = ["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]", "~grid.arms.leviathan",
              "grid.tokens=[1024]", "trainer.global_batch=2", "trainer.micro_batch=2",  # 8 steps
              "trainer.ckpt_every=2", "trainer.val_every=4", "trainer.warmup_steps=1",
              "sweep.name=crash", f"paths.root_dir={tmp_path}", f"tracking.uri={mlflow_server}",
              "tracking.flush_every_s=3600", "tracking.heartbeat_every_s=1"]
    log = open(tmp_path / "sweep.log", "w")  # noqa: SIM115 - closed below
    # the job's first attempt waits at step 4 (after the checkpoint of step 2) until killed: a
    # tiny model would otherwise finish its 8 steps between two polls for the checkpoint
    hold = {"LEVIATHAN_REHEARSE_PREEMPTION": "crash-164K-1.02Ktok-s0-dense@4"}
    proc = subprocess.Popen([sys.executable, "-m", "leviathan.sweep", *common], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **hold})
    runs_dir = tmp_path / "scratch" / "runs"

    def crashed_run():  # the first run with a checkpoint and an open MLflow run
        for d in sorted(runs_dir.glob("crash-*")) if runs_dir.exists() else []:
            if (d / "last.ckpt").exists() and (d / "mlflow_run_id").exists():
                return d
        assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
        return None

    run_dir = wait_for(crashed_run, 900, "a checkpoint of the first job", poll=0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    from leviathan.tracking.server import pid_alive

    manifest_path = tmp_path / "sweeps" / "crash" / "manifest.json"
    job_pid = json.loads(manifest_path.read_text())["jobs"][run_dir.name]["job_id"]
    wait_for(lambda: not pid_alive(job_pid), 60, "the killed job's process to end", poll=0.2)
    run, run_id = run_dir.name, (run_dir / "mlflow_run_id").read_text().strip()
    c, runs = mlflow_runs(mlflow_server, "crash")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "RUNNING")]

    rows = {r["run"]: r for r in status(tmp_path, "crash", mlflow_server)}
    assert rows[run]["state"] == "lost" and rows[run]["unsent"] > 0, rows[run]
    manifest = json.loads(manifest_path.read_text())
    del manifest["jobs"][run]  # the launcher forgot the job (e.g. squeue after MinJobAge)
    manifest_path.write_text(json.dumps(manifest))

    def state() -> str:
        return next(r["state"] for r in status(tmp_path, "crash", mlflow_server) if r["run"] == run)

    wait_for(lambda: state() == "lost", 120, "the missed heartbeats to mark the run lost", poll=2)

    from leviathan.sweep.status import main as status_main

    capsys.readouterr()
    assert status_main(["crash", "--sync", "--sweeps-dir", str(tmp_path / "sweeps"),
                        "--tracking-uri", mlflow_server]) == 0
    synced = capsys.readouterr().out
    assert f"sync {run}: sent" in synced and not (run_dir / JOURNAL_FILE).exists(), synced
    steps = sorted(m.step for m in c.get_metric_history(run_id, "train/loss"))
    assert steps and steps == list(range(1, len(steps) + 1)), steps  # what it had trained

    again = sweep_cli([c_ for c_ in common if not c_.startswith("tracking.flush")])
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    assert f"resume {run}: lost" in again.stdout and "1 finished, 0 failed" in again.stdout
    c, runs = mlflow_runs(mlflow_server, "crash")
    # resumed into its run, not a second one
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    for r in runs:
        for key in ("train/loss", "lr", "tokens_seen"):
            steps = [m.step for m in c.get_metric_history(r.info.run_id, key)]
            assert sorted(steps) == list(range(1, 9)), (r.info.run_name, key, steps)
    logs = "".join(p.read_text(errors="replace") for p in
                   (tmp_path / "scratch" / "submitit" / "crash").glob("*_log.out"))
    assert "resuming from" in logs
    rows = status(tmp_path, "crash", mlflow_server)
    assert [r["state"] for r in rows] == ["finished"] and all(r["unsent"] == 0 for r in rows)


def test_sweep_through_mlflow_on_postgresql(pg_dir, tmp_path, capsys):
    """`make tracking-server`'s service: a real PostgreSQL and a 2-worker MLflow server in a
    named folder; a smoke sweep lands there (read back from PostgreSQL itself), the load
    bench runs against it, and `down` stops both."""
    import psycopg2

    from leviathan.tracking import service
    from leviathan.tracking.postgres import Postgres
    from leviathan.tracking.server import free_port

    info = service.up(pg_dir, port=free_port(), workers=2, timeout_s=600)
    assert service.main(["status", "--dir", str(pg_dir)]) == 0
    assert info["backend"].startswith("postgresql+psycopg2://") and info["workers"] == 2
    # one small dense run: what is tested is the tracking backend
    out = sweep_cli(["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]", "grid.tokens=[1024]",
                     "~grid.arms.leviathan", "trainer.warmup_steps=1", "sweep.name=smoke-pg",
                     f"paths.root_dir={tmp_path}", f"tracking.uri={info['uri']}"])
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    assert "1 finished, 0 failed" in out.stdout
    c, runs = mlflow_runs(info["uri"], "smoke-pg")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.metrics["final/tokens_seen"] == 1024

    pg = Postgres(pg_dir)
    os.environ["PGPASSFILE"] = str(pg.pgpass)
    try:
        with psycopg2.connect(host="127.0.0.1", port=pg.port, dbname="mlflow",
                              user="mlflow") as db, db.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                        "WHERE t.key = 'sweep' AND t.value = 'smoke-pg' AND r.status = 'FINISHED'")
            assert cur.fetchone()[0] == 2  # the training run and the sweep's parent run
    finally:
        del os.environ["PGPASSFILE"]

    from leviathan.bench.__main__ import main as bench_main

    capsys.readouterr()
    assert bench_main(["tracking", "--jobs", "4", "--backend", "postgres", "--uri", info["uri"],
                       "--steps", "20", "--step-s", "0.05", "--flush-every-s", "0.5"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (res["metrics_sent"], res["metrics_stored"]) == (800, 800)
    assert res["lost"] == res["duplicated"] == 0 and res["p99_flush_ms"] > 0

    service.down(pg_dir)
    assert service.main(["status", "--dir", str(pg_dir)]) == 1
    assert not pg.running()


def test_bench_tracking_starts_its_own_sqlite_server(capsys):
    from leviathan.bench.__main__ import main as bench_main

    assert bench_main(["tracking", "--jobs", "3", "--backend", "sqlite", "--steps", "20",
                       "--step-s", "0.05", "--flush-every-s", "0.5"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("jobs", "metrics_sent", "metrics_stored", "lost", "duplicated", "p99_flush_ms",
                "backend"):
        assert key in res, key
    assert res["backend"] == "sqlite" and res["jobs"] == 3 and res["workers"] == 1
    assert res["metrics_sent"] == res["metrics_stored"] == 600
    assert res["lost"] == res["duplicated"] == 0 and res["flushes"] > 0
