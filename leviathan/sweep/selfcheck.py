"""`python -m leviathan.sweep.selfcheck --folder DIR [key=value ...]`: a small array of
`count_steps` toy jobs through the launcher (SLURM by default), waited for — a one-minute test
that submitit, SLURM and the shared folder work on a cluster before a sweep goes to it.

`count_steps` is also the resumable toy job of the launcher tests (requeue, preemption).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def count_steps(n: int, state_file: str, step_s: float = 0.1, hold_at: int | None = None,
                hold_s: float = 900.0) -> dict[str, Any]:
    """Toy resumable job: counts to n, saving the count after every step; a rerun (requeue)
    continues from the saved count. Returns the count each attempt started from.

    `hold_at`: the first attempt stops counting at that count and waits (up to `hold_s`) to be
    signalled or killed, so a test can requeue it mid-run without racing its end."""
    path = Path(state_file)
    state = json.loads(path.read_text()) if path.exists() else {"count": 0, "starts": []}
    state["starts"].append(state["count"])
    state["restart_count"] = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    first = len(state["starts"]) == 1
    while state["count"] < n:
        if first and state["count"] == hold_at:
            end = time.monotonic() + hold_s
            while time.monotonic() < end:  # a signal handler (submitit) requeues and exits
                time.sleep(0.05)
        time.sleep(step_s)
        state["count"] += 1
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)  # atomic: a kill between steps never loses the count
    return {"count": state["count"], "starts": state["starts"], "host": os.uname().nodename}


def main(argv: list[str] | None = None) -> int:
    """Submit `--jobs` toy jobs with the composed launcher config (conf/local included) and
    `launcher.<key>=value` overrides (a bare `key=value` means `launcher.key=value`)."""
    import argparse

    from leviathan.config import compose
    from leviathan.sweep.launcher import ResumableCall, make_executor, submit_array, wait

    ap = argparse.ArgumentParser(prog="python -m leviathan.sweep.selfcheck",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--launcher", default="slurm", help="launcher option: slurm | local")
    ap.add_argument("--folder", required=True, help="shared folder for submitit files")
    ap.add_argument("--jobs", type=int, default=2, help="toy jobs in the array")
    ap.add_argument("overrides", nargs="*", help="launcher keys, e.g. partition=gpu mem_gb=1")
    args = ap.parse_args(argv)
    from leviathan.errors import LeviathanError
    from leviathan.logs import setup_logging

    setup_logging()
    overrides = [o if "." in o.split("=", 1)[0] else f"launcher.{o}" for o in args.overrides]
    try:
        node = compose("sweep", [f"launcher={args.launcher}", *overrides,
                                 f"launcher.folder={args.folder}"]).launcher
        executor = make_executor(node)
    except LeviathanError as e:  # e.g. LauncherError; anything else shows its traceback
        log.error(f"error: {e}")
        return 2
    folder = Path(args.folder)
    for old in folder.glob("toy_*.json"):
        old.unlink()  # a fresh count, not a resume of an earlier check
    fns = [ResumableCall(count_steps, 20, str(folder / f"toy_{i}.json"))
           for i in range(args.jobs)]
    jobs = submit_array(executor, fns)
    log.info("submitted: " + ", ".join(str(j.job_id) for j in jobs))
    states = wait(jobs, on_change=lambda i, s: log.info(f"  job {jobs[i].job_id}: {s}"))
    for job, state in zip(jobs, states, strict=True):
        print(job.job_id, state, job.result() if state == "finished" else job.stderr())
    return 0 if all(s == "finished" for s in states) else 1


if __name__ == "__main__":
    raise SystemExit(main())
