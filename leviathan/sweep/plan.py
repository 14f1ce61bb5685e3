"""Plan a sweep: compose and validate every run's full config, count, cost, write the plan.

Nothing is launched here. A bad grid fails before anything is written or submitted, with the
key named. `make_plan(cfg)` returns a SweepPlan; `write_plan` writes `sweeps/<sweep>/plan.csv`,
`manifest.json` and one resolved config per run under `configs/`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leviathan.config import override_key
from leviathan.sweep.grid import GridError, RunSpec, expand, to_grid_config

# Overrides of the sweep command that belong to the sweep itself, not to its runs.
SWEEP_ONLY = ("sweep", "grid", "launcher", "eval", "hydra", "design")


@dataclass
class PlannedRun:
    run: str  # run name (stable: scratch folder and MLflow run name)
    pair: str  # matched-pair id
    arm: str  # dense | leviathan | a control (grid.CONTROLS)
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
    tokens: int  # token budget (a WSD-S branch: the tokens it has seen when it ends)
    steps: int  # optimizer steps
    global_batch: int  # sequences per step
    lr: float  # peak learning rate
    schedule: str  # cosine | wsd | constant (WSD-S main run)
    cooldown: float | None  # WSD-S branch: its multiple of the token budget
    branch_of: str | None  # WSD-S branch: the main run it starts from (inside the main's job)
    flops: float  # FLOPs this run computes: flops_per_token x tokens (a branch: its own steps)
    mfu: float  # the MFU its GPU-hours imply: flops / (gpu_hours x sweep.peak_flops)
    gpu_hours: float  # steps x seconds per step x devices (leviathan.sweep.costs)
    config_hash: str  # what training records; equal hashes compute the same thing
    param_matched: bool = False  # sized to match another arm's parameters (Leviathan with its
    #   splines, factorized with rank=match): the isoparametric check holds it to iso_tolerance
    param_gap: float | None = None  # params_total / its pair's Dense params_total - 1 (None:
    #   no Dense in the pair); for an unmatched control, how far it is from parameter-matched
    config: dict[str, Any] = field(repr=False, default_factory=dict)  # resolved run config
    lr_scale: float = 1.0  # the grid's LR variant: multiplier of the rule's (or trainer.lr)
    cost_source: str = "assumed"  # measured | modelled | assumed (leviathan.sweep.costs)

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
    mfu_note: str = ""  # where the GPU-hours come from: measured, modelled (with the range the
    #   cost model's error gives the total), assumed
    cost_device: str | None = None  # the device the GPU-hours are for (status compares them)

    def frame(self):
        import pandas as pd

        return pd.DataFrame([r.row() for r in self.runs])


def run_overrides(task_overrides: list[str]) -> list[str]:
    """The sweep command's overrides that apply to every run (not sweep./grid/launcher ones)."""
    return [o for o in task_overrides
            if override_key(o).split(".", 1)[0].split("/", 1)[0] not in SWEEP_ONLY]


def code_version() -> dict[str, Any]:
    """The package version and the git commit of the code (as training records it)."""
    from leviathan import __version__
    from leviathan.training.records import git_commit

    return {"package": __version__, "git_commit": git_commit()}


def dedupe_overrides(overrides: list[str]) -> list[str]:
    """Keep the last override of each key, so the command line beats the grid beats the size."""
    keys = [override_key(o) for o in overrides]
    last = {k: i for i, k in enumerate(keys)}
    return [o for i, (o, k) in enumerate(zip(overrides, keys, strict=True)) if last[k] == i]


# the overrides that differ between the runs of one (size, arm, budget, LR): a run's config is
# its template's (composed once by Hydra) with these set (a grid of many seeds composes once)
PER_RUN_KEYS = {"seed": int, "run_name": str, "meta.pair": str, "+meta.cooldown": float,
                "+meta.branch_of": str}


def _template_key(overrides: list[str]) -> tuple:
    """What a run's config depends on besides PER_RUN_KEYS: its other overrides, and which of
    those keys it sets."""
    per_run = [o for o in overrides if o.split("=", 1)[0] in PER_RUN_KEYS]
    return (tuple(o for o in overrides if o not in per_run),
            tuple(sorted(o.split("=", 1)[0] for o in per_run)))


def _compose_run(spec: RunSpec, extra: list[str], cache: dict | None = None):
    """The run's composed config: Hydra's compose of its overrides, or, when `cache` holds the
    template of a run that differs only in PER_RUN_KEYS, a copy of it with those set."""
    import copy

    from omegaconf import OmegaConf

    from leviathan.config import compose

    overrides = dedupe_overrides([*spec.overrides, *extra])
    key = _template_key(overrides)
    if cache is not None and key in cache:
        cfg = copy.deepcopy(cache[key])
        for o in overrides:
            name, value = o.split("=", 1)
            if name in PER_RUN_KEYS:
                OmegaConf.update(cfg, name.lstrip("+"), PER_RUN_KEYS[name](value), merge=False)
        return cfg
    try:
        cfg = compose("train", overrides)
    except Exception as e:  # hydra's errors name the bad override; add the run it belongs to
        raise GridError(f"run {spec.name}: cannot compose its config ({type(e).__name__}: {e})"
                        ) from e
    if cache is not None:
        cache[key] = copy.deepcopy(cfg)
    return cfg


def make_plan(cfg: Any, task_overrides: list[str], root: Path) -> SweepPlan:
    """Compose, validate, count and cost every run of `cfg.grid` (Hydra initialised)."""
    from omegaconf import OmegaConf

    from leviathan.sweep.launcher import to_launcher_config
    from leviathan.sweep.rules import check_pairs
    from leviathan.training.topology import check_launch

    grid = to_grid_config(cfg.get("grid"))
    sweep = OmegaConf.to_container(cfg.sweep, resolve=True)
    name = sweep.get("name") or grid.name
    launcher = to_launcher_config(cfg.launcher)
    user = run_overrides(task_overrides)
    from leviathan.sweep.costs import RunCoster

    ctx = _Context(grid=grid, sweep=sweep, name=name, user=user, root=str(root.resolve()),
                   user_keys={override_key(o) for o in [*user, *grid.overrides]},
                   cli_keys={override_key(o) for o in user},
                   coster=RunCoster.for_sweep(sweep, sweeps_dir=cfg.paths.sweeps_dir))
    specs = expand(grid, name)
    # Dense first (a stable sort keeps each arm's main runs before their branches), so that
    # every run of a (size, budget) trains on its Dense run's budget (_point_budget)
    planned = {i: _plan_run(specs[i], ctx)
               for i in sorted(range(len(specs)), key=lambda i: specs[i].arm != "dense")}
    runs = [planned[i] for i in range(len(specs))]
    for r in runs:  # the job's tasks are the run's ranks (SLURM), before anything is submitted
        check_launch(launcher, r.config["trainer"], r.run)
    _fill_gaps(runs)
    _check_names(runs)
    check_pairs(runs)
    if grid.family in ("isoparametric", "smoke"):
        _check_isoparametric(runs, grid)
    return SweepPlan(name=name, grid=asdict(grid), runs=runs,
                     launcher=asdict(launcher), sweep=sweep, user_overrides=user,
                     code_version=code_version(),
                     mfu_note=ctx.coster.note(sum(r.gpu_hours for r in runs)),
                     cost_device=ctx.coster.device)


@dataclass
class _Context:
    grid: Any
    sweep: dict[str, Any]
    name: str
    user: list[str]
    root: str
    user_keys: set[str]  # keys the command line or the grid's overrides set
    cli_keys: set[str]  # keys the command line sets (they beat the grid's rules)
    point_tokens: dict[tuple, int] = field(default_factory=dict)  # (size, budget) -> tokens
    mains: dict[str, Any] = field(default_factory=dict)  # WSD-S main run -> its branches
    checked_data: set[str] = field(default_factory=set)
    coster: Any = None  # leviathan.sweep.costs.RunCoster: each run's GPU-hours and their source
    composed: dict = field(default_factory=dict)  # _compose_run's templates
    models: dict = field(default_factory=dict)  # template -> (resolved model config, counts)


def _plan_run(spec: RunSpec, ctx: _Context) -> PlannedRun:
    """One run: composed, counted, its ladder rules applied, validated, costed."""
    from omegaconf import OmegaConf

    from leviathan.data import to_data_config
    from leviathan.models import flops_per_token
    from leviathan.sweep.costs import mfu_of
    from leviathan.training.config import config_hash, trainer_config
    from leviathan.training.plan import plan_run as run_plan

    grid = ctx.grid
    extra = _run_overrides(spec, ctx)
    run_cfg = _compose_run(spec, extra, ctx.composed)
    # the model section is the template's (no model key follows a per-run one): resolve it once
    template = _template_key(dedupe_overrides([*spec.overrides, *extra]))
    if template not in ctx.models:
        ctx.models[template] = _resolve_model(spec, run_cfg)
    mc, counts = ctx.models[template]
    to_data_config(run_cfg.data)  # every value range-checked before the rules below use it
    trainer_config(run_cfg)  # (data.seq_len=0 or trainer.lr=0 would divide by zero there)
    budget = _point_budget(spec, ctx, counts)
    seq_len = int(run_cfg.data.seq_len)
    tps = int(run_cfg.trainer.global_batch) * seq_len
    sets = _rule_sets(spec, ctx, run_cfg, counts, budget, tps)
    for key, value in sets.items():
        OmegaConf.update(run_cfg, key, value, merge=False)
    _check_data_once(run_cfg, ctx)
    tc = trainer_config(run_cfg)
    fpt = flops_per_token(mc, seq_len)
    rp = run_plan(tc, seq_len, counts.as_dict(), fpt)
    container = OmegaConf.to_container(run_cfg, resolve=True)
    container.pop("hydra", None)
    own_steps = rp.max_steps - (ctx.mains[spec.main][spec.cooldown].start_step
                                if spec.cooldown is not None else 0)
    flops = fpt * own_steps * rp.tokens_per_step
    peak = float(ctx.sweep["peak_flops"])
    cost = ctx.coster.cost(ctx.coster.step(mc, spec.arm, tc, seq_len, rp.accumulation),
                           own_steps, rp.world_size, flops)
    return PlannedRun(
        run=spec.name, pair=spec.pair, arm=spec.arm, size=str(mc.size), family=grid.family,
        seed=spec.seed, d_model=mc.d_model, n_layers=mc.n_layers, n_heads=mc.n_heads,
        params_total=counts.total, params_input=counts.input, params_head=counts.head,
        params_body=counts.body, tokens=rp.budget_tokens, steps=rp.max_steps,
        global_batch=rp.global_batch, lr=tc.lr, schedule=tc.schedule, cooldown=spec.cooldown,
        branch_of=spec.main, flops=flops, mfu=mfu_of(flops, cost.gpu_hours, peak),
        gpu_hours=cost.gpu_hours, config_hash=config_hash(container),
        param_matched=mc.parameter_matched, config=container, lr_scale=spec.lr_scale,
        cost_source=cost.source)


def _run_overrides(spec: RunSpec, ctx: _Context) -> list[str]:
    """The overrides that name and tag a run (seed, sweep, pair, family, arm, a cooldown
    branch's parent), then the command line's."""
    extra = [f"seed={spec.seed}", f"run_name={spec.name}", f"meta.sweep={ctx.name}",
             f"meta.pair={spec.pair}", f"meta.family={ctx.grid.family}", f"meta.arm={spec.arm}",
             f"paths.root_dir={ctx.root}", *ctx.user]
    if spec.cooldown is not None:
        extra += [f"+meta.cooldown={spec.cooldown:g}", f"+meta.branch_of={spec.main}"]
    return extra


def _resolve_model(spec: RunSpec, run_cfg: Any):
    """(model config, parameter counts) of a composed run; GridError naming the run."""
    from leviathan.models import count_params, resolve_model_config

    try:
        mc = resolve_model_config(run_cfg.model)
        return mc, count_params(mc)
    except ValueError as e:
        raise GridError(f"run {spec.name} ({spec.size_config}, arm {spec.arm}): {e}") from e


def _point_budget(spec: RunSpec, ctx: _Context, counts: Any) -> int:
    """The token budget of every run of a (size, budget) point, whatever its arm and seed: the
    Dense run's N (planned first) x tokens per parameter, or the absolute budget. A seed that
    Dense does not run (grid.seeds_by_arm) trains on the same tokens as its Dense-run seeds;
    only a grid without Dense at that size takes the first arm's N."""
    key = (spec.size_config, spec.budget)
    if key not in ctx.point_tokens:
        kind, value = spec.budget
        n = counts.total if ctx.grid.budget_params == "total" else counts.body
        ctx.point_tokens[key] = int(value) if kind == "tokens" else int(round(value * n))
    return ctx.point_tokens[key]


def _rule_sets(spec: RunSpec, ctx: _Context, run_cfg: Any, counts: Any, budget: int,
               tps: int) -> dict[str, Any]:
    """The ladder rules' overrides of one run: token budget, LR, WSD-S schedule and branch
    (each only where the command line or the grid's overrides do not set it)."""
    from leviathan.sweep.rules import lr_settings

    grid = ctx.grid
    sets: dict[str, Any] = {}
    if "trainer.tokens" not in ctx.user_keys:
        sets["trainer.tokens"] = budget
    rule = grid.lr_rule if grid.lr_rule.enabled else None
    if "trainer.lr" not in ctx.cli_keys and (rule is not None or spec.lr_scale != 1):
        sets.update(lr_settings(rule, spec.lr_scale, counts.body, tps, run_cfg.trainer))
    if grid.cooldowns:
        sets.update(_wsd_sets(spec, ctx, run_cfg, budget, tps, sets))
    return sets


def _wsd_sets(spec: RunSpec, ctx: _Context, run_cfg: Any, budget: int, tps: int,
              sets: dict[str, Any]) -> dict[str, Any]:
    """WSD-S: fixed warm-up (from the base budget) shared by main and branches; the main run
    constant to its last branch point with snapshots there, a branch cooling down from one."""
    from leviathan.sweep.rules import branches

    warmup = sets.get("trainer.warmup_steps", run_cfg.trainer.warmup_steps)
    if warmup is None:
        warmup = int(float(run_cfg.trainer.warmup_fraction) * math.ceil(budget / tps))
    out: dict[str, Any] = {"trainer.warmup_steps": int(warmup)}
    if spec.cooldown is None:
        plan_b = branches(budget, tps, ctx.grid.cooldowns,
                          float(run_cfg.trainer.cooldown_fraction), int(warmup))
        ctx.mains[spec.name] = {b.multiple: b for b in plan_b}
        out.update({"trainer.schedule": "constant",
                    "trainer.tokens": max(b.start_step for b in plan_b) * tps,
                    "trainer.snapshot_steps": sorted({b.start_step for b in plan_b})})
    else:
        b = ctx.mains[spec.main][spec.cooldown]
        out.update({"trainer.schedule": "wsd", "trainer.tokens": b.total_steps * tps,
                    "trainer.init_from": str(_folder(run_cfg, spec.main).snapshot(
                        b.start_step))})
    return out


def _check_data_once(run_cfg: Any, ctx: _Context) -> None:
    """check_data on each distinct data config of the sweep, once."""
    from omegaconf import OmegaConf

    from leviathan.data import check_data

    data_key = json.dumps(OmegaConf.to_container(run_cfg.data, resolve=True), sort_keys=True)
    if data_key not in ctx.checked_data:
        check_data(run_cfg.data)
        ctx.checked_data.add(data_key)


def _folder(run_cfg: Any, run_name: str):
    from omegaconf import OmegaConf

    from leviathan.tracking.runs import RunFolder

    return RunFolder.of(OmegaConf.select(run_cfg, "paths.scratch_dir"), run_name)


def _check_names(runs: list[PlannedRun]) -> None:
    seen: set[str] = set()
    for r in runs:
        if r.run in seen:
            raise GridError(f"grid.sizes: run {r.run} appears twice (duplicate size or seed)")
        seen.add(r.run)


def _pair_dense(runs: list[PlannedRun]) -> dict[str, PlannedRun]:
    """pair -> its Dense run; a pair of a seed Dense does not run (grid.seeds_by_arm) gets the
    Dense run of its size and budget (the same model: a seed changes no parameter)."""
    own, by_point = {}, {}
    for r in runs:
        if r.arm == "dense":
            own.setdefault(r.pair, r)
            by_point.setdefault(r.pair.rsplit("-s", 1)[0], r)
    return {r.pair: own.get(r.pair) or by_point[r.pair.rsplit("-s", 1)[0]] for r in runs
            if r.pair in own or r.pair.rsplit("-s", 1)[0] in by_point}


def _fill_gaps(runs: list[PlannedRun]) -> None:
    """Each run's param_gap against the Dense run of its pair (_pair_dense)."""
    dense = _pair_dense(runs)
    for r in runs:
        if r.pair in dense:
            r.param_gap = r.params_total / dense[r.pair].params_total - 1.0


def _check_isoparametric(runs: list[PlannedRun], grid) -> None:
    """Each pair's Dense total and every parameter-matched arm's (Leviathan, factorized with
    rank=match) within grid.iso_tolerance; the unmatched controls only show their gap."""
    by_pair: dict[str, dict[str, PlannedRun]] = {}
    for r in runs:
        by_pair.setdefault(r.pair, {}).setdefault(r.arm, r)
    dense = _pair_dense(runs)
    for pair, arms in by_pair.items():
        if pair not in dense:
            continue
        d = dense[pair].params_total
        for arm, run in arms.items():
            if arm == "dense" or not run.param_matched:
                continue
            other = run.params_total
            gap = abs(other - d) / d
            if gap > grid.iso_tolerance:
                raise GridError(
                    f"grid.sizes: pair {pair} cannot be matched isoparametrically: Dense "
                    f"{d:,} vs {arm} {other:,} parameters ({gap:.2%} > grid.iso_tolerance="
                    f"{grid.iso_tolerance:.0%}; {arm} depth {arms[arm].n_layers})")


def write_plan(plan: SweepPlan, sweep_dir: Path) -> Path:
    """plan.csv, manifest.json (hashes, code version, launch settings), configs/<run>.yaml:
    files fit to commit, so every secret in them is masked (leviathan.redaction); the jobs get
    the real configs."""
    import yaml

    from leviathan.redaction import redact, redact_text

    sweep_dir.mkdir(parents=True, exist_ok=True)
    frame = plan.frame()
    for col in frame.columns:
        frame[col] = frame[col].map(lambda v: redact_text(v) if isinstance(v, str) else v)
    frame.to_csv(sweep_dir / "plan.csv", index=False)
    cdir = sweep_dir / "configs"
    cdir.mkdir(exist_ok=True)
    for r in plan.runs:
        (cdir / f"{r.run}.yaml").write_text(yaml.safe_dump(redact(r.config), sort_keys=False))
    manifest_path = sweep_dir / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest = {
        "sweep": plan.name, "planned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "grid": plan.grid, "code_version": plan.code_version, "launcher": plan.launcher,
        "sweep_settings": plan.sweep, "user_overrides": plan.user_overrides,
        "runs": {r.run: {"pair": r.pair, "arm": r.arm, "size": r.size,
                         "config_hash": r.config_hash, "config": f"configs/{r.run}.yaml"}
                 for r in plan.runs},
        "cost": {"device": plan.cost_device, "note": plan.mfu_note},  # what plan.csv's
        #   GPU-hours are for (sweep.status sets the runs' actual hours beside them)
        "jobs": old.get("jobs", {}),  # filled at launch: run -> job id, launcher, folder
        "parent_run_id": old.get("parent_run_id"),
    }
    write_json(manifest_path, manifest)
    return manifest_path


def launched_manifest(sweep_dir: Path) -> dict | None:
    """The manifest of a sweep that was launched (jobs submitted, or a parent run opened), else
    None: the records a dry run must leave alone."""
    path = sweep_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if manifest.get("jobs") or manifest.get("parent_run_id") else None


def plan_changes(plan: SweepPlan, manifest: dict) -> dict[str, list[str]]:
    """The plan against a launched manifest: runs `new` to it, `changed` (another config hash:
    they would not count as finished) and `dropped` (in the manifest, not in the plan)."""
    old = {run: rec.get("config_hash") for run, rec in manifest.get("runs", {}).items()}
    return {"new": [r.run for r in plan.runs if r.run not in old],
            "changed": [r.run for r in plan.runs if r.run in old and old[r.run] != r.config_hash],
            "dropped": sorted(set(old) - {r.run for r in plan.runs})}


def dry_run_dir(sweep_dir: Path) -> Path:
    """A new folder for a dry run beside a launched sweep's records: dry-runs/<timestamp>/."""
    base = sweep_dir / "dry-runs" / time.strftime("%Y%m%d-%H%M%S")
    out, k = base, 1
    while out.exists():
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out


def write_json(path: Path, obj: Any) -> None:
    """`obj` as JSON, secrets masked (the sweep's manifest.json)."""
    from leviathan.redaction import redact
    from leviathan.tracking.runs import write_atomic

    write_atomic(path, json.dumps(redact(obj), indent=2, default=str) + "\n")


def _gap(r: PlannedRun) -> str:
    """'+0.4%' of total parameters against the pair's Dense run ('' for Dense itself or without
    one), with '*' where the arm is not sized to match (an unmatched control)."""
    if r.param_gap is None or r.arm == "dense":
        return ""
    return f"{r.param_gap:+.1%}" + ("" if r.param_matched else " *")


def _unmatched_note(runs: list[PlannedRun]) -> list[str]:
    """One line per unmatched control arm: its parameter gap to Dense over the sizes."""
    out = []
    from leviathan.sweep.grid import CONTROLS

    for arm in dict.fromkeys(r.arm for r in runs if r.arm in CONTROLS and r.arm != "dense_untied"
                             and not r.param_matched and r.param_gap is not None):
        gaps = [r.param_gap for r in runs if r.arm == arm and r.param_gap is not None]
        out.append(f"* {arm} is not parameter-matched: {min(gaps):+.1%} to {max(gaps):+.1%} "
                   "total parameters against the pair's Dense (the analysis reads it by its "
                   "effective size, like any arm)")
    return out


def format_plan(plan: SweepPlan) -> str:
    """The plan as a markdown table, plus totals (and, for WSD-S, the cost of the branches next
    to separate cosine runs of each length)."""
    rows = ["| run | pair | arm | size | d_model | n_layers | total | vs Dense | embedding | body "
            "| tokens | steps | lr | schedule | FLOPs | MFU | GPU-h | cost |", "|" + "---|" * 18]
    for r in plan.runs:
        rows.append(f"| {r.run} | {r.pair} | {r.arm} | {r.size} | {r.d_model} | {r.n_layers} "
                    f"| {r.params_total:,} | {_gap(r)} | {r.params_input:,} | {r.params_body:,} "
                    f"| {r.tokens:,} | {r.steps:,} | {r.lr:.3g} | {r.schedule} "
                    f"| {r.flops:.3g} | {r.mfu:.3g} | {r.gpu_hours:.3g} | {r.cost_source} |")
    total_flops = sum(r.flops for r in plan.runs)
    total_h = sum(r.gpu_hours for r in plan.runs)
    arms = sorted({r.arm for r in plan.runs}, key=lambda a: (a != "dense", a))
    per_arm = ", ".join(f"{sum(r.arm == a for r in plan.runs)} {a}" for a in arms)
    rows.append(f"\n{len(plan.runs)} runs ({per_arm}) in {len({r.pair for r in plan.runs})} "
                f"pairs; {total_flops:.3g} FLOPs, ~{total_h:.4g} GPU-hours (MFU column: of "
                f"{float(plan.sweep['peak_flops']):.3g} FLOP/s)")
    rows.append(plan.mfu_note)
    rows += _unmatched_note(plan.runs)
    branches = [r for r in plan.runs if r.branch_of]
    if branches:
        mains = {r.run: r for r in plan.runs if not r.branch_of}
        # a separate cosine run of a branch's length: its main run's FLOPs and GPU-h per token
        separate = sum(mains[r.branch_of].gpu_hours / max(1, mains[r.branch_of].tokens) * r.tokens
                       for r in branches)
        wsd = sum(r.gpu_hours for r in plan.runs if r.branch_of or r.schedule == "constant")
        rows.append(f"WSD-S: {len(branches)} cooldown branches from "
                    f"{len({r.branch_of for r in branches})} main runs cost ~{wsd:.3g} GPU-hours; "
                    f"separate cosine runs of the same lengths would cost ~{separate:.3g} "
                    f"({wsd / separate:.2f}x)" if separate else "")
    return "\n".join(rows)
