"""Plan a sweep: compose and validate every run's full config, count, cost, write the plan.

Nothing is launched here. A bad grid fails before anything is written or submitted, with the
key named. `make_plan(cfg)` returns a SweepPlan; `write_plan` writes `sweeps/<sweep>/plan.csv`,
`manifest.json` and one resolved config per run under `configs/`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leviathan.sweep.grid import GridError, RunSpec, expand, to_grid_config

# Overrides of the sweep command that belong to the sweep itself, not to its runs.
SWEEP_ONLY = ("sweep", "grid", "launcher", "eval", "hydra")


@dataclass
class PlannedRun:
    run: str  # run name (stable: scratch folder and MLflow run name)
    pair: str  # matched-pair id
    arm: str  # dense | leviathan
    size: str  # the Dense size's ladder name, e.g. 109M
    family: str  # experiment family
    seed: int  # model-init seed
    d_model: int
    n_layers: int  # resolved depth (isoparametric: solved)
    n_heads: int
    params_total: int
    params_input: int  # embedding table or LEV generator
    params_head: int
    params_body: int
    tokens: int  # token budget
    steps: int  # optimizer steps
    global_batch: int  # sequences per step
    flops: float  # training FLOPs: flops_per_token x tokens
    gpu_hours: float  # flops / (sweep.mfu x sweep.peak_flops)
    config_hash: str  # what training records; equal hashes compute the same thing
    config: dict[str, Any] = field(repr=False, default_factory=dict)  # resolved run config

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("config")
        return d


@dataclass
class SweepPlan:
    name: str
    grid: dict[str, Any]
    runs: list[PlannedRun]
    launcher: dict[str, Any]
    sweep: dict[str, Any]
    user_overrides: list[str]
    code_version: dict[str, Any]

    def frame(self):
        import pandas as pd

        return pd.DataFrame([r.row() for r in self.runs])


def run_overrides(task_overrides: list[str]) -> list[str]:
    """The sweep command's overrides that apply to every run (not sweep./grid/launcher ones)."""
    out = []
    for o in task_overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key.split(".", 1)[0].split("/", 1)[0] in SWEEP_ONLY:
            continue
        out.append(o)
    return out


def code_version() -> dict[str, Any]:
    """The package version and the git commit of the code (as training records it)."""
    from leviathan import __version__
    from leviathan.training.run import git_commit

    return {"package": __version__, "git_commit": git_commit()}


def dedupe_overrides(overrides: list[str]) -> list[str]:
    """Keep the last override of each key, so the command line beats the grid beats the size."""
    last = {o.lstrip("+~").split("=", 1)[0]: i for i, o in enumerate(overrides)}
    return [o for i, o in enumerate(overrides) if last[o.lstrip("+~").split("=", 1)[0]] == i]


def _compose_run(spec: RunSpec, extra: list[str]):
    from leviathan.config import compose

    try:
        return compose("train", dedupe_overrides([*spec.overrides, *extra]))
    except Exception as e:  # hydra's errors name the bad override; add the run it belongs to
        raise GridError(f"run {spec.name}: cannot compose its config ({type(e).__name__}: {e})"
                        ) from e


def make_plan(cfg: Any, task_overrides: list[str], root: Path) -> SweepPlan:
    """Compose, validate, count and cost every run of `cfg.grid` (Hydra initialised)."""
    from omegaconf import OmegaConf

    from leviathan.data import check_data
    from leviathan.models import count_params, flops_per_token, resolve_model_config
    from leviathan.sweep.launcher import to_launcher_config
    from leviathan.training.config import config_hash, trainer_config
    from leviathan.training.config import make_plan as run_plan

    grid = to_grid_config(cfg.get("grid"))
    sweep = OmegaConf.to_container(cfg.sweep, resolve=True)
    name = sweep.get("name") or grid.name
    launcher = to_launcher_config(cfg.launcher)
    user = run_overrides(task_overrides)
    user_keys = {o.lstrip("+~").split("=", 1)[0] for o in [*user, *grid.overrides]}
    abs_root = str(root.resolve())

    specs = expand(grid, name)
    runs: list[PlannedRun] = []
    checked_data: set[str] = set()
    pair_tokens: dict[str, int] = {}
    for spec in specs:
        extra = [f"seed={spec.seed}", f"run_name={spec.name}", f"meta.sweep={name}",
                 f"meta.pair={spec.pair}", f"meta.family={grid.family}",
                 f"paths.root_dir={abs_root}", *user]
        run_cfg = _compose_run(spec, extra)
        try:
            mc = resolve_model_config(run_cfg.model)
            counts = count_params(mc)
        except ValueError as e:
            raise GridError(f"run {spec.name} ({spec.size_config}, arm {spec.arm}): {e}") from e
        if spec.pair not in pair_tokens:  # the first arm of a pair (dense if present) sets N
            kind, value = spec.budget
            n = counts.total if grid.budget_params == "total" else counts.body
            pair_tokens[spec.pair] = int(value) if kind == "tokens" else int(round(value * n))
        if "trainer.tokens" not in user_keys:
            OmegaConf.update(run_cfg, "trainer.tokens", pair_tokens[spec.pair], merge=False)
        data_key = json.dumps(OmegaConf.to_container(run_cfg.data, resolve=True), sort_keys=True)
        if data_key not in checked_data:
            check_data(run_cfg.data)
            checked_data.add(data_key)
        tc = trainer_config(run_cfg)
        fpt = flops_per_token(mc, int(run_cfg.data.seq_len))
        rp = run_plan(tc, int(run_cfg.data.seq_len), counts.as_dict(), fpt)
        container = OmegaConf.to_container(run_cfg, resolve=True)
        container.pop("hydra", None)
        flops = fpt * rp.budget_tokens
        runs.append(PlannedRun(
            run=spec.name, pair=spec.pair, arm=spec.arm, size=str(mc.size), family=grid.family,
            seed=spec.seed, d_model=mc.d_model, n_layers=mc.n_layers, n_heads=mc.n_heads,
            params_total=counts.total, params_input=counts.input, params_head=counts.head,
            params_body=counts.body, tokens=rp.budget_tokens, steps=rp.max_steps,
            global_batch=rp.global_batch, flops=flops,
            gpu_hours=flops / (float(sweep["mfu"]) * float(sweep["peak_flops"])) / 3600.0,
            config_hash=config_hash(container), config=container))
    _check_pairs(runs, grid)
    return SweepPlan(name=name, grid=asdict(grid), runs=runs,
                     launcher=asdict(launcher), sweep=sweep, user_overrides=user,
                     code_version=code_version())


def _check_pairs(runs: list[PlannedRun], grid) -> None:
    """Isoparametric families: each pair's totals within grid.iso_tolerance; names unique."""
    seen: set[str] = set()
    for r in runs:
        if r.run in seen:
            raise GridError(f"grid.sizes: run {r.run} appears twice (duplicate size or seed)")
        seen.add(r.run)
    if grid.family not in ("isoparametric", "smoke"):
        return
    by_pair: dict[str, dict[str, PlannedRun]] = {}
    for r in runs:
        by_pair.setdefault(r.pair, {})[r.arm] = r
    for pair, arms in by_pair.items():
        if {"dense", "leviathan"} <= set(arms):
            d, lv = arms["dense"].params_total, arms["leviathan"].params_total
            gap = abs(lv - d) / d
            if gap > grid.iso_tolerance:
                raise GridError(
                    f"grid.sizes: pair {pair} cannot be matched isoparametrically: Dense "
                    f"{d:,} vs Leviathan {lv:,} parameters ({gap:.2%} > grid.iso_tolerance="
                    f"{grid.iso_tolerance:.0%}; Leviathan depth {arms['leviathan'].n_layers})")


def write_plan(plan: SweepPlan, sweep_dir: Path) -> Path:
    """plan.csv, manifest.json (hashes, code version, launch settings), configs/<run>.yaml."""
    import yaml

    sweep_dir.mkdir(parents=True, exist_ok=True)
    plan.frame().to_csv(sweep_dir / "plan.csv", index=False)
    cdir = sweep_dir / "configs"
    cdir.mkdir(exist_ok=True)
    for r in plan.runs:
        (cdir / f"{r.run}.yaml").write_text(yaml.safe_dump(r.config, sort_keys=False))
    manifest_path = sweep_dir / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest = {
        "sweep": plan.name, "planned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "grid": plan.grid, "code_version": plan.code_version, "launcher": plan.launcher,
        "sweep_settings": plan.sweep, "user_overrides": plan.user_overrides,
        "runs": {r.run: {"pair": r.pair, "arm": r.arm, "size": r.size,
                         "config_hash": r.config_hash, "config": f"configs/{r.run}.yaml"}
                 for r in plan.runs},
        "jobs": old.get("jobs", {}),  # filled at launch: run -> job id, launcher, folder
        "parent_run_id": old.get("parent_run_id"),
    }
    _write_json(manifest_path, manifest)
    return manifest_path


def _write_json(path: Path, obj: Any) -> None:
    from leviathan.training.run import write_atomic

    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def format_plan(plan: SweepPlan) -> str:
    """The plan as a markdown table, plus totals."""
    rows = ["| run | pair | arm | size | d_model | n_layers | total | embedding | body | tokens "
            "| steps | FLOPs | GPU-h |", "|" + "---|" * 13]
    for r in plan.runs:
        rows.append(f"| {r.run} | {r.pair} | {r.arm} | {r.size} | {r.d_model} | {r.n_layers} "
                    f"| {r.params_total:,} | {r.params_input:,} | {r.params_body:,} "
                    f"| {r.tokens:,} | {r.steps:,} | {r.flops:.3g} | {r.gpu_hours:.3g} |")
    total_flops = sum(r.flops for r in plan.runs)
    total_h = sum(r.gpu_hours for r in plan.runs)
    rows.append(f"\n{len(plan.runs)} runs in {len({r.pair for r in plan.runs})} pairs; "
                f"{total_flops:.3g} FLOPs, ~{total_h:.3g} GPU-hours at MFU "
                f"{plan.sweep['mfu']} of {float(plan.sweep['peak_flops']):.3g} FLOP/s")
    return "\n".join(rows)
