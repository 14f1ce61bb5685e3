"""Measured training steps, read from the files that hold them, as cost-model Measurements
(leviathan.sweep.cost_model):

- a `bench gpu` record (`python -m leviathan.bench gpu --out ...`, e.g. sweeps/bench_gpu.json):
  its settings and, per shape and arm, the median step's tokens/s;
- a `bench gpu-suite` record (docs/gpu/*-gpu-suite.json): its gpu_eager and gpu_compiled parts
  (bench gpu records) and its train part, the real training job of one pair (job=True);
- the finished runs of a sweep (its run folders' summary.json: the steady-state tokens/s the
  job logged, with the run's own config), the pilot a plan may take its costs from.

Every shape is resolved through conf/ (leviathan.bench.shapes.arm_config), so a record names
sizes and arms only; a size conf/ no longer has is skipped with a note.
"""

from __future__ import annotations

import json
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
    for name in ("gpu_eager", "gpu_compiled"):
        part = parts.get(name) or {}
        if part.get("shapes"):
            defaults = {**SUITE_BENCH_DEFAULTS, "compile": name == "gpu_compiled"}
            out += _bench({"shapes": part["shapes"], "settings": part.get("settings") or {}},
                          f"{source} {name}", device, when, notes, defaults)
    train = parts.get("train") or {}
    size = (rec.get("settings") or {}).get("train_model", "v1/60M")
    for arm in SUITE_TRAIN_ARMS:
        res = (train.get(arm) or {}).get("result") or {}
        tps = (res.get("throughput") or {}).get("tokens_per_s")
        plan = res.get("plan") or {}
        cfg = _config(size, arm, source, notes) if tps else None
        if cfg is None:
            continue
        s = step_shape(cfg, arm=arm, seq_len=int(plan["seq_len"]),
                       micro_batch=int(plan["micro_batch"]),
                       accumulation=int(plan["accumulation"]),
                       compile=bool(train.get("compile", True)), job=True)
        out.append(Measurement(s, device, float(tps) / int(plan.get("world_size", 1)),
                               f"{source} train {arm}", when))
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
