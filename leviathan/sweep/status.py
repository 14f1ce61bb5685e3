"""`python -m leviathan.sweep.status <sweep> [--sync]`: each run's state, tokens seen, last val
loss, and what its outbox still holds; then planned vs actual GPU-hours per size and arm and in
all (leviathan.sweep.run_costs: the finished runs' summary.json; on the CPU, wall-hours of CPU).

States come from the launcher (submitit: local processes or SLURM) and from MLflow, read
together by leviathan.sweep.liveness (`lost`: the job died and left its MLflow run RUNNING;
`unsynced`: finished, final writes still in the outbox); the sweep's manifest
(sweeps/<sweep>/manifest.json) says which job ran which run. `--sync` first sends what jobs left
in their run folders' outboxes (leviathan.tracking.sync), skipping runs whose job is alive.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from leviathan.errors import LeviathanError

log = logging.getLogger(__name__)


class SweepNotFound(LeviathanError, FileNotFoundError):
    """The sweep has no manifest under paths.sweeps_dir (it was never planned there)."""


def _load(sweep_dir: Path) -> tuple[dict, Any, dict[str, dict]]:
    """(manifest, plan table, {run: its resolved config})."""
    manifest_path = sweep_dir / "manifest.json"
    if not manifest_path.exists():
        raise SweepNotFound(f"{manifest_path}: no such sweep manifest (plan the sweep first "
                                f"with `python -m leviathan.sweep +grid=<name>`)")
    import pandas as pd
    import yaml

    manifest = json.loads(manifest_path.read_text())
    plan = pd.read_csv(sweep_dir / "plan.csv")
    configs = {run: yaml.safe_load((sweep_dir / manifest["runs"][run]["config"]).read_text())
               for run in plan["run"]}
    return manifest, plan, configs


def collect(sweep_dir: Path, tracking_uri: str | None = None, experiment: str | None = None,
            sync: bool = False) -> list[dict[str, Any]]:
    """One row per planned run: run, pair, arm, size, state, job, tokens_seen, tokens, val_loss,
    unsent (operations waiting in its outbox), heartbeat_age_s. `sync`: first send the outboxes
    of runs whose job is not alive to the server read here.

    `tracking_uri`/`experiment` default to what the sweep's runs were configured with."""
    from leviathan.sweep.launch import run_folder
    from leviathan.sweep.launcher import job_states, load_jobs
    from leviathan.sweep.liveness import heartbeat_age_s, run_state
    from leviathan.tracking import runs as tr
    from leviathan.tracking.credentials import use_credentials
    from leviathan.tracking.outbox import Outbox

    manifest, plan, configs = _load(sweep_dir)
    runs = list(plan["run"])
    first_cfg = configs[runs[0]]
    recorded = use_credentials(first_cfg["tracking"]["uri"])  # a record's: userinfo masked
    uri = use_credentials(tracking_uri) if tracking_uri else recorded
    if uri != recorded:
        log.warning(f"note: the sweep's runs were configured with tracking.uri={recorded}; "
                    f"reading {uri}")
    handles = load_jobs(manifest.get("jobs", {}), runs)
    launcher_state = dict(zip(handles, job_states(list(handles.values())), strict=True))
    run_dirs = {run: run_folder(configs[run]) for run in runs}
    if sync:
        from leviathan.tracking.sync import sync_runs

        alive = {r for r, st in launcher_state.items() if st in ("queued", "running")}
        done = sync_runs({r: d for r, d in run_dirs.items() if r not in alive}, uri=uri)
        log.info(f"sync: {len(done)} run folder(s) had queued MLflow operations"
                 + (f"; skipped {len(alive)} with a live job (it sends its own)" if alive else ""))

    by_name: dict[str, Any] = {}
    try:
        c = tr.client(uri)
        exp = tr.experiment_id(c, experiment or first_cfg["tracking"]["experiment"],
                               create=False)
        for r in (tr.training_runs(c, exp, manifest["sweep"]) if exp else []):
            name = r.data.tags.get(tr.Tag.RUN_NAME) or r.info.run_name
            by_name.setdefault(name, r)  # newest first
        reachable = True
    except Exception:  # noqa: BLE001 - show launcher states even when MLflow is down
        reachable = False
    rows = []
    for rec in plan.to_dict("records"):
        r = by_name.get(rec["run"])
        state = run_state(launcher_state.get(rec["run"]), r)
        m = r.data.metrics if r is not None else {}
        rows.append({
            "run": rec["run"], "pair": rec["pair"], "arm": rec["arm"], "size": rec["size"],
            "state": state or ("not launched" if rec["run"] not in manifest.get("jobs", {})
                               else "unknown"),
            "job": (manifest.get("jobs", {}).get(rec["run"]) or {}).get("job_id"),
            "tokens_seen": int(m["tokens_seen"]) if "tokens_seen" in m else 0,
            "tokens": int(rec["tokens"]),
            "val_loss": m.get("final/val_loss", m.get("val/loss")),
            "unsent": Outbox(run_dirs[rec["run"]]).pending_count(),
            "heartbeat_age_s": round(heartbeat_age_s(r)) if r is not None else None,
        })
    if not reachable:
        log.warning(f"warning: MLflow at {uri} is not reachable; states come from the launcher "
                    "only")
    return rows


def environments(sweep_dir: Path, tracking_uri: str | None = None,
                 experiment: str | None = None) -> list[str]:
    """Whether the sweep's runs ran on one environment and, if not, which packages differ
    (nothing when MLflow cannot be reached: `collect` has said so)."""
    import yaml

    from leviathan.tracking import runs as tr
    from leviathan.tracking.credentials import use_credentials
    from leviathan.tracking.environment import sweep_report
    from leviathan.tracking.server import is_up

    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    first = next(iter(manifest["runs"].values()))
    trk = yaml.safe_load((sweep_dir / first["config"]).read_text())["tracking"]
    uri = use_credentials(tracking_uri or trk["uri"])
    if uri.startswith("http") and not is_up(uri):
        return []
    c = tr.client(uri)
    exp = tr.experiment_id(c, experiment or trk["experiment"], create=False)
    return sweep_report(c, tr.training_runs(c, exp, manifest["sweep"]) if exp else [])


def format_rows(rows: list[dict[str, Any]]) -> str:
    out = ["| run | arm | size | state | job | tokens seen / budget | val loss |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        frac = r["tokens_seen"] / r["tokens"] if r["tokens"] else 0.0
        loss = "" if r["val_loss"] is None else f"{r['val_loss']:.4f}"
        out.append(f"| {r['run']} | {r['arm']} | {r['size']} | {r['state']} | {r['job'] or ''} "
                   f"| {r['tokens_seen']:,} / {r['tokens']:,} ({frac:.0%}) | {loss} |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    out.append("\n" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    unsent = [r["run"] for r in rows if r.get("unsent")]
    if unsent:
        out.append(f"{len(unsent)} run(s) hold MLflow writes in their outbox ({', '.join(unsent)})"
                   ": sent when the run starts again, or now with --sync")
    lost = [r["run"] for r in rows if r["state"] == "lost"]
    if lost:
        out.append(f"lost (job gone, MLflow run left RUNNING): {', '.join(lost)}; launching the "
                   "sweep again resumes them into the same MLflow runs")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leviathan.sweep.status", description=__doc__)
    ap.add_argument("sweep", help="sweep name (its folder under paths.sweeps_dir)")
    ap.add_argument("overrides", nargs="*", help="config overrides, as for the sweep command "
                    "(e.g. tracking.uri=http://host:5000 paths.root_dir=/proj)")
    ap.add_argument("--sweeps-dir", default=None, help="shortcut for paths.sweeps_dir")
    ap.add_argument("--tracking-uri", default=None, help="shortcut for tracking.uri")
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    ap.add_argument("--sync", action="store_true",
                    help="first send what dead or finished jobs left in their run folders' "
                         "outboxes (to the server this command reads)")
    args = ap.parse_args(argv)
    from leviathan.logs import setup_logging

    setup_logging(info_to_stderr=args.json)  # --json: stdout carries the rows only
    from leviathan.config import compose, set_explicitly
    from leviathan.tracking.config import TrackingConfig
    from leviathan.tracking.credentials import use_credentials

    cfg = compose("sweep", args.overrides)
    sweeps_dir = Path(args.sweeps_dir or str(cfg.paths.sweeps_dir))
    # an existing sweep is read where its runs were configured to log, unless a site's
    # conf/local, $MLFLOW_TRACKING_URI, an override or the flag says otherwise
    schema = TrackingConfig()
    uri = args.tracking_uri or set_explicitly(cfg, args.overrides, "tracking.uri", schema.uri)
    experiment = set_explicitly(cfg, args.overrides, "tracking.experiment", schema.experiment)
    try:
        uri = use_credentials(uri or "", cfg.tracking.get("credentials_file")) or None
        rows = collect(sweeps_dir / args.sweep, uri, experiment, sync=args.sync)
    except LeviathanError as e:  # SweepNotFound, ...; anything else shows its traceback
        log.error(f"error: {e}")
        return 2
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    if not args.json:
        from leviathan.sweep.run_costs import cost_rows, format_costs

        print("\n".join(["", *environments(sweeps_dir / args.sweep, uri, experiment)]))
        print("\n" + format_costs(*cost_rows(sweeps_dir / args.sweep)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
