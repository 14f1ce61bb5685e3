"""What a sweep's finished runs cost, against what its plan said: `python -m
leviathan.sweep.status <sweep>` prints the table, and a plan that names this sweep in
sweep.costs_from reads the same runs as measurements (leviathan.sweep.cost_records).

A run is finished when its run folder holds summary.json of the config the sweep planned (the
manifest's config hash). Its actual cost is summary.json's `cost` (leviathan.training.clock):
the wall seconds of all its attempts times its devices, on the device it ran on. The planned
GPU-hours are plan.csv's, for the device the plan costed (the manifest's `cost`); runs that ran
on the CPU are wall-hours of CPU, said so, not GPU-hours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class FinishedRun:
    run: str
    arm: str  # the grid's arm
    size: str
    config: dict[str, Any]  # the run's resolved config (sweeps/<sweep>/configs/<run>.yaml)
    summary: dict[str, Any]  # its run folder's summary.json
    summary_path: Path

    @property
    def device(self) -> str:
        """The device it ran on: summary.json's, else (older runs) the trainer's accelerator."""
        cost = self.summary.get("cost") or {}
        if cost.get("device"):
            return str(cost["device"])
        return "cpu" if self.config["trainer"].get("accelerator") == "cpu" else "GPU"

    @property
    def device_s(self) -> float:
        """Wall seconds times devices, every attempt (older runs: the last attempt's)."""
        cost = self.summary.get("cost") or {}
        if cost.get("device_s") is not None:
            return float(cost["device_s"])
        plan = self.summary.get("plan") or {}
        return float(self.summary.get("wall_s") or 0.0) * int(plan.get("world_size", 1))


def read_manifest(sweep_dir: Path) -> dict[str, Any] | None:
    path = sweep_dir / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def finished_runs(sweep_dir: Path, manifest: dict[str, Any] | None = None) -> list[FinishedRun]:
    """The sweep's runs whose folder holds the summary of the config it planned."""
    import yaml

    from leviathan.tracking.runs import RunFolder
    from leviathan.training.config import config_hash

    manifest = manifest or read_manifest(sweep_dir) or {}
    out = []
    for run, entry in (manifest.get("runs") or {}).items():
        cfg_path = sweep_dir / entry["config"]
        if not cfg_path.is_file():
            continue
        cfg = yaml.safe_load(cfg_path.read_text())
        path = RunFolder.of_config(cfg, entry.get("config_hash") or config_hash(cfg)).summary
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if summary.get("config_hash") not in (None, entry.get("config_hash")):
            continue  # another config trained under this name: not this plan's run
        out.append(FinishedRun(run, entry.get("arm", cfg["meta"].get("arm")),
                               str(entry.get("size", "")), cfg, summary, path))
    return out


def cost_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per (size, arm) in plan order, then the total: runs planned and finished, planned
    GPU-hours (all runs, and the finished ones), actual hours of the finished runs; and what
    the figures are for (the plan's device, the devices the runs ran on)."""
    import pandas as pd

    manifest = read_manifest(sweep_dir) or {}
    plan = pd.read_csv(sweep_dir / "plan.csv")
    done = {r.run: r for r in finished_runs(sweep_dir, manifest)}
    rows: dict[tuple, dict[str, Any]] = {}
    total = {"size": "total", "arm": "", "planned_runs": 0, "finished": 0, "planned_h": 0.0,
             "planned_finished_h": 0.0, "actual_h": 0.0}
    for rec in plan.to_dict("records"):
        row = rows.setdefault((str(rec["size"]), rec["arm"]), {
            "size": str(rec["size"]), "arm": rec["arm"], "planned_runs": 0, "finished": 0,
            "planned_h": 0.0, "planned_finished_h": 0.0, "actual_h": 0.0})
        r = done.get(rec["run"])
        for target in (row, total):
            target["planned_runs"] += 1
            target["planned_h"] += float(rec["gpu_hours"])
            if r is not None:
                target["finished"] += 1
                target["planned_finished_h"] += float(rec["gpu_hours"])
                target["actual_h"] += r.device_s / 3600.0
    devices = sorted({r.device for r in done.values()})
    about = {"planned_device": (manifest.get("cost") or {}).get("device"),
             "recorded": "cost" in manifest,  # manifests written before it: not said
             "devices": devices, "cpu": bool(devices) and devices == ["cpu"]}
    return [*rows.values(), total], about


def format_costs(rows: list[dict[str, Any]], about: dict[str, Any]) -> str:
    """The status's cost table: planned vs actual per size and arm, and the total."""
    planned_on = (f"on {about['planned_device']}" if about.get("planned_device")
                  else "at the assumed sweep.mfu (no device measured or modelled)"
                  if about.get("recorded") else "(its device not recorded: an older plan)")
    if not about["devices"]:
        unit, label = "GPU-h", "actual GPU-h"
    elif about["cpu"]:
        unit, label = "CPU-h", "actual CPU-h (wall time)"
    else:
        unit, label = "GPU-h", f"actual GPU-h ({', '.join(about['devices'])})"
    out = [f"Cost: planned GPU-hours {planned_on} vs actual "
           + ("hours of the finished runs on the CPU: wall time, not GPU-hours"
              if about["cpu"] else "GPU-hours of the finished runs (wall time x devices)"),
           f"| size | arm | finished | planned GPU-h | planned, finished runs | {label} | "
           "actual / planned |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = (f"{r['actual_h'] / r['planned_finished_h']:.3g}x"
                 if r["finished"] and r["planned_finished_h"] > 0 else "")
        name = "**total**" if r["size"] == "total" else r["size"]
        out.append(f"| {name} | {r['arm']} | {r['finished']} / {r['planned_runs']} | "
                   f"{r['planned_h']:.4g} | {r['planned_finished_h']:.4g} | "
                   f"{r['actual_h']:.4g} {unit} | {ratio} |")
    return "\n".join(out)
