"""Measured training steps, read from the files that hold them, as cost-model Measurements
(leviathan.sweep.cost_model):

- a `bench gpu` record (`python -m leviathan.bench gpu --out ...`, e.g. sweeps/bench_gpu.json):
  its settings and, per shape and arm, the median step's tokens/s;
- a `bench gpu-suite` record (docs/gpu/*-gpu-suite.json): its grid part (every shape of the
  shipped grids, leviathan.bench.gpu_grid), gpu_eager and gpu_compiled parts (bench gpu
  records) and its train part, the real training job of one pair (job=True; its settings as
  the job's summary.json states them, compile as the suite recorded it);
- the finished runs of a pilot sweep (sweep.costs_from, `read_sweeps`): each run's folder's
  summary.json (the steady-state step the job timed, leviathan.training.clock) with the run's
  own config (sweeps/<pilot>/configs/<run>.yaml). Read from the run folders, not MLflow: they
  exist offline, hold the resolved config, and need no server.

Every shape is resolved through conf/ (leviathan.bench.shapes.arm_config), so a record names
sizes and arms only; a size conf/ no longer has is skipped with a note.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from leviathan.sweep.cost_model import CostModelError, Measurement, step_shape

# bench gpu's settings before records carried them in a suite's parts (trainer=gpu's then)
SUITE_BENCH_DEFAULTS = {"micro_batch": 32, "accumulation": 1, "seq_len": 512,
                        "loss_impl": "chunked"}
SUITE_TRAIN_ARMS = ("dense", "leviathan")  # the isoparametric pair the suite's job trains


def read(paths: list[str | Path], notes: list[str] | None = None) -> list[Measurement]:
    """Every measurement in these record files (bench gpu or gpu-suite); CostModelError naming
    a file that is neither."""
    out: list[Measurement] = []
    for path in paths:
        path = Path(path)
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CostModelError(f"{path}: not a readable record ({e})") from e
        if "parts" in rec:
            out += _suite(rec, str(path), notes)
        elif "shapes" in rec and "settings" in rec:
            out += _bench(rec, str(path), rec.get("device", "?"), rec.get("written_at", ""),
                          notes)
        else:
            raise CostModelError(f"{path}: neither a `bench gpu` nor a `bench gpu-suite` record")
    return out


def _bench(rec: dict, source: str, device: str, when: str, notes: list[str] | None,
           defaults: dict | None = None) -> list[Measurement]:
    st = {**(defaults or {}), **(rec.get("settings") or {})}
    cuda = st.get("device", "cuda") == "cuda"
    out = []
    specs = [x.strip() for x in str(st.get("shapes") or "").split(",") if x.strip()]
    for shape, arms in (rec.get("shapes") or {}).items():
        for arm, r in arms.items():
            cfg = _config(r.get("spec") or _spec_of(shape, arm, specs), arm, source, notes)
            if cfg is None:
                continue
            s = step_shape(cfg, arm=arm, seq_len=int(st["seq_len"]),
                           micro_batch=int(st["micro_batch"]),
                           accumulation=int(st.get("accumulation", 1)),
                           compile=bool(st.get("compile")),
                           precision="bf16-mixed" if cuda else "32-true",
                           loss_impl=str(st.get("loss_impl", "chunked")))
            out.append(Measurement(s, device, float(r["tokens_per_s"]), f"{source} {shape} {arm}",
                                   when))
    return out


def _suite(rec: dict, source: str, notes: list[str] | None) -> list[Measurement]:
    parts = rec.get("parts") or {}
    device = ((parts.get("probe") or {}).get("result") or {}).get("device", "?")
    when = rec.get("started_at", "")
    out = []
    for name in ("grid", "gpu_eager", "gpu_compiled"):
        part = parts.get(name) or {}
        if part.get("shapes"):
            defaults = {**SUITE_BENCH_DEFAULTS, "compile": name != "gpu_eager"}
            out += _bench({"shapes": part["shapes"], "settings": part.get("settings") or {}},
                          f"{source} {name}", device, when, notes, defaults)
    train = parts.get("train") or {}
    size = train.get("model") or (rec.get("settings") or {}).get("train_model", "v1/60M")
    for arm in SUITE_TRAIN_ARMS:
        res = (train.get(arm) or {}).get("result") or {}
        cost = res.get("cost") or {}  # the job's own: steady state, settings (older: none)
        plan = res.get("plan") or {}
        tps = cost.get("tokens_per_s") or (res.get("throughput") or {}).get(
            "tokens_per_s", 0) / int(plan.get("world_size", 1))
        cfg = _config(size, arm, source, notes) if tps else None
        if cfg is None:
            continue
        st = {"compile": True, "precision": "bf16-mixed", "loss_impl": "chunked",  # before
              **(train.get("settings") or {}), **cost}  # the suite recorded them: trainer=gpu's
        s = step_shape(cfg, arm=arm, seq_len=int(plan["seq_len"]),
                       micro_batch=int(plan["micro_batch"]),
                       accumulation=int(plan["accumulation"]), compile=bool(st["compile"]),
                       precision=str(st["precision"]), loss_impl=str(st["loss_impl"]), job=True)
        out.append(Measurement(s, device, float(tps), f"{source} train {arm}", when))
    return out


def read_sweeps(names: str | list[str] | None, sweeps_dir: Path, notes: list[str] | None = None,
                key: str = "sweep.costs_from") -> list[Measurement]:
    """The finished runs of these pilot sweeps (names of folders under `sweeps_dir`, or paths)
    as measurements of the real job (job=True) at each run's own settings: micro-batch,
    accumulation, sequence length, compile, precision, loss, device; the runs of one model and
    settings (seeds, learning rates) give one measurement, their median steady tokens/s.
    CostModelError naming `key` for a sweep that does not exist or has no finished run."""
    from leviathan.sweep.run_costs import finished_runs, read_manifest

    names = [names] if isinstance(names, str) else list(names or [])
    out: list[Measurement] = []
    for name in names:
        folder = Path(sweeps_dir) / str(name)
        manifest = read_manifest(folder)
        if manifest is None:
            raise CostModelError(f"{key}: no sweep {name!r} ({folder / 'manifest.json'} is "
                                 "missing or unreadable): name a sweep planned under "
                                 "paths.sweeps_dir")
        runs = [r for r in finished_runs(folder, manifest)
                if (r.summary.get("cost") or {}).get("tokens_per_s")]
        if not runs:
            raise CostModelError(f"{key}: sweep {name!r} has no finished run with its cost "
                                 f"(none of its {len(manifest.get('runs') or {})} planned runs "
                                 "has a summary.json with `cost` in its run folder)")
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(max(
            Path(r.summary_path).stat().st_mtime for r in runs)))
        groups: dict[tuple, list[float]] = {}
        for r in runs:
            t, c = r.config["trainer"], r.summary["cost"]
            s = step_shape(r.config, arm=r.arm, seq_len=int(c["seq_len"]),
                           micro_batch=int(c["micro_batch"]),
                           accumulation=int(c["accumulation"]), compile=bool(t["compile"]),
                           precision=str(t["precision"]),
                           loss_impl=str(t.get("loss_impl", "chunked")), job=True)
            groups.setdefault((str(c["device"]), s), []).append(float(c["tokens_per_s"]))
        for (device, s), tps in groups.items():
            out.append(Measurement(s, device, statistics.median(tps),
                                   f"sweep {name}: {len(tps)} finished run(s) of {s.shape} "
                                   f"{s.arm}", when, pilot=True))
        if notes is not None:
            notes.append(f"{key}: {name}: {len(runs)} finished run(s), {len(groups)} "
                         "measured shape(s)")
    return out


def _config(shape: str, arm: str, source: str, notes: list[str] | None) -> Any:
    from leviathan.bench.shapes import ShapeError, arm_config

    try:
        return arm_config(shape, arm)
    except ShapeError as e:
        if notes is not None:
            notes.append(f"{source}: {shape} {arm} skipped ({e})")
        return None


def _spec_of(shape: str, arm: str, specs: list[str]) -> str:
    """The `bench gpu --shapes` spec a record's shape key (ladder/size) came from: a size such
    as smoke/13M resolves to custom/13M."""
    from leviathan.bench.shapes import ShapeError, arm_config

    for spec in specs:
        try:
            c = arm_config(spec, arm)
        except ShapeError:
            continue
        if f"{c.ladder}/{c.size}" == shape:
            return spec
    return shape
