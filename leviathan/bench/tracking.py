"""`python -m leviathan.bench tracking [--jobs N] [--backend sqlite|postgres]`: N training jobs'
MLflow writers against one real tracking server.

Each job is a separate process (forked once the imports are done) running the project's
RunTracker with the real flush interval (tracking.flush_every_s): it opens its run, logs
--metrics values per step every --step-s seconds for --steps steps, and finishes the run. The
server: `sqlite` is the laptop default (`mlflow server` over SQLite, one worker); `postgres` is
the cluster setup (`make tracking-server`: PostgreSQL and --workers workers). Both are started
here in a temporary folder (or give --uri). Afterwards every run's history is read back:
lost = (key, step) pairs sent but not stored; duplicated = stored values beyond one per pair;
a flush = one metrics batch, from its first send attempt to the server's answer, retries and
backoff included. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

EXPERIMENT = "bench-tracking"


def _job(i: int, a, uri: str, root: Path, barrier, results) -> None:
    from leviathan.tracking.run_tracker import RunTracker

    tracker = RunTracker(uri, EXPERIMENT, state_dir=root / f"job{i:03d}",
                         flush_every_s=a.flush_every_s, retry_max_backoff_s=10.0,
                         final_flush_timeout_s=600.0, start_timeout_s=600.0,
                         final_flush_spread_s=a.final_flush_spread_s)
    tracker.start(run_name=f"job-{i:03d}", tags={"kind": "bench", "bench": a.tag},
                  params={"job": i, "backend": a.backend}, wait_s=600.0)
    barrier.wait()
    t0 = time.monotonic()
    for step in range(1, a.steps + 1):
        tracker.log_metrics({f"m{k}": float(step + k) for k in range(a.metrics)}, step=step)
        time.sleep(max(0.0, t0 + step * a.step_s - time.monotonic()))
    n_training = len(tracker.flush_ms)  # the batches sent before the final flush
    ok = tracker.finish("FINISHED")
    results.put({"job": i, "run_id": tracker.run_id, "ok": ok, "flush_ms": tracker.flush_ms,
                 "n_training": n_training,
                 "failed_sends": tracker.failed_sends})


def _server(a, tmp: Path):
    """(uri, stop) for --uri or a server of --backend started under `tmp`."""
    if a.uri:
        return a.uri, lambda: None
    if a.backend == "sqlite":
        from leviathan.tracking.server import start_server

        server = start_server(tmp / "sqlite", timeout=600)
        log.info(f"mlflow server on SQLite (1 worker): {server.uri}")
        return server.uri, server.stop
    from leviathan.tracking import service
    from leviathan.tracking.server import free_port

    info = service.up(tmp / "postgres", port=free_port(), workers=a.workers, timeout_s=600)
    return info["uri"], lambda: service.down(tmp / "postgres")


def _read_back(uri: str, runs: list[dict], a) -> tuple[int, int, int]:
    """(stored, lost, duplicated) over every job's run and key."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    stored = lost = dup = 0
    for r in runs:
        for k in range(a.metrics):
            steps = [m.step for m in c.get_metric_history(r["run_id"], f"m{k}")]
            held = set(steps)
            stored += len(steps)
            dup += len(steps) - len(held)
            lost += sum(1 for s in range(1, a.steps + 1) if s not in held)
    return stored, lost, dup


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench tracking", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=8, help="concurrent writer processes")
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--workers", type=int, default=4, help="postgres: MLflow server workers")
    p.add_argument("--steps", type=int, default=60, help="steps per job")
    p.add_argument("--metrics", type=int, default=10, help="metric values per step")
    p.add_argument("--step-s", type=float, default=1.0,
                   help="seconds between steps (1 s: a fast real step; smaller: a stress test)")
    p.add_argument("--flush-every-s", type=float, default=5.0, help="tracking.flush_every_s")
    p.add_argument("--final-flush-spread-s", type=float, default=None,
                   help="tracking.final_flush_spread_s (default: the tracker's, 0.4 x "
                        "--flush-every-s, at most 5 s; 0: every job sends its last batch at "
                        "once)")
    p.add_argument("--uri", help="use this running server instead of starting one")
    p.add_argument("--dir", help="work folder (default: a new one under /var/tmp)")
    a = p.parse_args(argv)
    a.tag = f"{a.backend}-{a.jobs}-{int(time.time())}"
    import multiprocessing as mp

    import mlflow.entities  # noqa: F401 - imported once here, shared by the forked jobs
    from mlflow.tracking import MlflowClient  # noqa: F401

    from leviathan.logs import setup_logging
    from leviathan.tracking.run_tracker import final_flush_spread

    setup_logging()
    tmp = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="leviathan-bench-tracking-",
                                                          dir="/var/tmp"))
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)  # PostgreSQL runs as `postgres` when we are root: it must get in
    uri, stop = _server(a, tmp)
    import gc

    gc.freeze()  # the forked jobs share the imported modules' pages instead of copying them
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(a.jobs), ctx.Queue()
    log.info(f"{a.jobs} jobs x {a.steps} steps x {a.metrics} metrics, a step every {a.step_s}s, "
             f"flush every {a.flush_every_s}s -> {uri}")
    load_before = os.getloadavg()[0]
    procs = [ctx.Process(target=_job, args=(i, a, uri, tmp / "jobs", barrier, results))
             for i in range(a.jobs)]
    try:
        t0 = time.monotonic()
        for proc in procs:
            proc.start()
        runs = []
        deadline = time.monotonic() + 1800 + a.steps * a.step_s
        while len(runs) < a.jobs and time.monotonic() < deadline:
            try:
                runs.append(results.get(timeout=5))
            except Exception:  # noqa: BLE001 - queue.Empty: check the processes
                if not any(proc.is_alive() for proc in procs):
                    break
        for proc in procs:
            proc.join(timeout=30)
        wall = time.monotonic() - t0
        log.info(f"{len(runs)}/{a.jobs} jobs finished in {wall:.0f}s; reading every run back")
        stored, lost, dup = _read_back(uri, runs, a)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        stop()
    flush = [ms for r in runs for ms in r["flush_ms"]]
    during = [ms for r in runs for ms in r["flush_ms"][:r["n_training"]]]
    final = [ms for r in runs for ms in r["flush_ms"][r["n_training"]:]]
    sent = a.jobs * a.steps * a.metrics
    lost += (a.jobs - len(runs)) * a.steps * a.metrics  # a job that never reported lost it all
    out = {"bench": "tracking", "backend": a.backend, "jobs": a.jobs,
           "workers": a.workers if a.backend == "postgres" else 1, "steps": a.steps,
           "metrics_per_step": a.metrics, "step_s": a.step_s, "flush_every_s": a.flush_every_s,
           "final_flush_spread_s": final_flush_spread(a.flush_every_s, a.final_flush_spread_s),
           "offered_metrics_per_s": round(a.jobs * a.metrics / a.step_s, 1),
           "metrics_sent": sent, "metrics_stored": stored, "lost": lost, "duplicated": dup,
           "flushes": len(flush), "p50_flush_ms": round(_pct(flush, 50), 1),
           "p90_flush_ms": round(_pct(flush, 90), 1),
           "p99_flush_ms": round(_pct(flush, 99), 1), "max_flush_ms": round(max(flush or [0]), 1),
           "p99_flush_ms_training": round(_pct(during, 99), 1),
           "p99_flush_ms_final": round(_pct(final, 99), 1),
           "failed_sends": sum(r["failed_sends"] for r in runs),
           "jobs_with_unsent_outbox": sum(1 for r in runs if not r["ok"]), "wall_s": round(wall, 1),
           "cpus": os.cpu_count(), "loadavg_1min_before": round(load_before, 1),
           "loadavg_1min_after": round(os.getloadavg()[0], 1)}
    log.info(f"stored {stored}/{sent} metric values, lost {lost}, duplicated {dup}; flush p50 "
             f"{out['p50_flush_ms']} ms, p99 {out['p99_flush_ms']} ms over {len(flush)} batches; "
             f"{out['failed_sends']} failed sends (retried)")
    if not a.dir:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
