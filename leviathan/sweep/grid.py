"""The `grid` config group: which sizes, arms, token budgets and seeds a sweep runs.

A grid holds only what it changes; every run starts from the single-run config
(`conf/train.yaml`) and the command line. `expand(grid, sweep_name)` turns a grid into
RunSpecs: one per (size, budget, seed, arm), the two arms of a (size, budget, seed) forming a
matched pair that sees the identical token stream and the same token count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.typed_config import (
    above,
    at_least,
    choice,
    each,
    in_range,
    optional,
    positive,
)

FAMILIES = ("isoparametric", "isobody", "decoupled", "data_scaling", "smoke", "custom")
# the arms a grid may run, in plan order; a control needs its Leviathan partner at every size
ARM_NAMES = ("dense", "leviathan", "factorized", "dense_untied", "factorized_wide",
             "lev_codebooks")
CONTROLS = ("factorized", "dense_untied", "factorized_wide", "lev_codebooks")
log = logging.getLogger(__name__)


class GridError(LeviathanError, ValueError):
    """A grid config value is invalid; the message names the key (grid.<field>)."""


@dataclass
class LRRule:
    enabled: bool = False  # derive each run's LR and warm-up from its size (else trainer.lr)
    lr: float = 3.0e-4  # peak learning rate of a model with `params` body parameters
    params: float = 1.0e8  # the reference body-parameter count
    exponent: float = -0.3333333333  # lr = lr x (N_body / params)^exponent (OLMo's ladder: -1/3)
    warmup_tokens_per_param: float = 1.0  # warm-up tokens = this x N_body (OLMo's ladder: 1)

    _checks = {"lr": above(0), "params": above(0), "warmup_tokens_per_param": in_range(0)}


@dataclass
class PowerSpec:
    """The dry run's power analysis (analysis/power/simulate.py): the stated truth and noise model
    its simulated ladders are drawn from."""

    enabled: bool = True  # simulate the plan in every dry run, write sweeps/<sweep>/power.csv
    noise: dict[str, float] = field(default_factory=lambda: {"all": 0.01})  # arm -> relative
    #   sd of one run's final loss (`all`: every arm not named); a pilot sweep measures it
    noise_slope: float = 0.0  # each arm's sd proportional to (N / N_smallest)^noise_slope:
    #   noise that grows (> 0) or shrinks with size (0.83: 5x from 60M to 421M)
    effect: float = 1.10  # the true LEV over its control (N_eff ratio) at the smallest size
    effect_slope: float = 0.0  # LEV over its control proportional to (N / N_smallest)^slope:
    #   an advantage that changes with size (-0.135: 1.3 at 60M to 1.0 at 421M)
    control_worth: float = 1.0  # the control's N_eff / its pair's Dense N (what it is worth
    #   against the size it is matched to, whatever its own parameter count)
    seed_corr: float = 0.0  # correlation of Leviathan's and its control's noise at one seed
    #   (they share the data order)
    lr_drift: dict[str, float] = field(default_factory=dict)  # arm -> octaves its true LR
    #   optimum moves away from the rule's over the ladder
    lr_curvature: float = 0.01  # relative loss per (log2 LR / optimum)^2 of every arm
    lr_spread: float = 0.5  # sd (octaves) of the true optimum around the LR rule's, per size
    ladders: int = 200  # simulated ladders
    bootstrap: int = 200  # bootstrap replicates per ladder for the printed intervals
    lr_estimator: str = "mean"  # the analysis's LR rule the simulation applies (the fit's
    #   fit.lr_estimator: mean | pooled; see analysis/readings/lr_selection.py)

    _checks = {"lr_estimator": choice("mean", "pooled"), "effect": above(0),
               "seed_corr": in_range(-0.99, 0.99),
               "control_worth": above(0), "lr_curvature": in_range(0), "lr_spread": in_range(0),
               "ladders": at_least(20), "bootstrap": at_least(20)}


@dataclass
class GridConfig:
    name: str = "???"  # grid name; the sweep's name defaults to it
    family: str = "custom"  # experiment family (MLflow tag `family`), see FAMILIES
    sizes: list[str] = field(default_factory=list)  # model configs, e.g. v1/109M (conf/model/)
    arms: dict[str, list[str]] = field(default_factory=dict)  # arm -> overrides of that arm: dense,
    #   leviathan and the controls factorized (LEV's parameters as a low-rank table on
    #   Leviathan's backbone), dense_untied (Dense with an untied head), factorized_wide (a
    #   low-rank table of LEV's rank, model.factorized.rank=span: not parameter-matched) and
    #   lev_codebooks (LEV without its splines, model.lev.splines=false: codebooks + W_r)
    dense_sizes: list[str] = field(default_factory=list)  # Dense-only rungs (no pair): extend the
    #   Dense fit so that effective sizes are read by interpolation, not extrapolation
    tokens_per_param: list[float] = field(default_factory=lambda: [20.0])  # budgets, x N_dense
    tokens: list[int] | None = None  # absolute token budgets instead of tokens_per_param
    budget_params: str = "total"  # N for tokens_per_param: the Dense arm's total | body count
    seeds: list[int] = field(default_factory=lambda: [0])  # seeds, one pair each: a seed sets the
    #   initialisation and the data order together (data.seed follows seed unless set)
    seeds_by_arm: dict[str, list[int]] = field(default_factory=dict)  # arm -> its own seeds
    #   (instead of `seeds`): e.g. more seeds on Leviathan and its control than on Dense; a pair
    #   is (size, budget, seed) and holds the arms that run that seed
    seeds_by_size: dict[str, int] = field(default_factory=dict)  # size (as in sizes) -> how
    #   many of each arm's seeds run there (its first n): fewer seeds where runs cost most (the
    #   design search's allocation; every arm's seeds are still one pair each)
    lr_sizes: list[str] | None = None  # sizes (as in sizes / dense_sizes) that sweep `lr`; the
    #   others run the rule's LR only (null: every size sweeps)
    lr: list[float] = field(default_factory=lambda: [1.0])  # learning-rate variants of every
    #   (size, arm): multipliers of the run's default LR (lr_rule's, else trainer.lr); the
    #   analysis keeps the best per (size, arm, tokens, seed)
    lr_rule: LRRule = field(default_factory=LRRule)  # per-run default LR and warm-up from the
    #   run's body size (lr_rule.enabled=true); off: trainer.lr and its warm-up as configured
    cooldowns: list[float] = field(default_factory=list)  # WSD-S: one constant-LR main run per
    #   (size, arm, seed, lr) and one cooldown branch per multiple of the token budget listed
    #   (e.g. [0.5, 1, 2, 4]), each branch decaying over trainer.cooldown_fraction of its tokens
    overrides: list[str] = field(default_factory=list)  # applied to every run (before the CLI)
    iso_tolerance: float = 0.02  # isoparametric pairs must match total params within this
    power: PowerSpec = field(default_factory=PowerSpec)  # the dry run's power analysis

    _checks = {
        "family": choice(*FAMILIES), "tokens_per_param": each(above(0)),
        "tokens": optional(each(positive())), "budget_params": choice("total", "body"),
        "seeds": each(at_least(0)), "lr": each(above(0)), "cooldowns": each(above(0)),
        "iso_tolerance": in_range(0, 1, lo_open=True, hi_open=True),
    }


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep, before its config is composed."""

    name: str  # unique, stable run name: <sweep>-<pair>-<arm>[-lr<x>][-cd<m>]
    pair: str  # matched-pair id: <size>-<budget>-s<seed>
    arm: str  # dense | leviathan | a control (CONTROLS)
    size_config: str  # the model config, e.g. v1/109M
    budget: tuple[str, float]  # ("tokens_per_param", 20.0) or ("tokens", 1e9)
    seed: int
    overrides: tuple[str, ...]  # size, grid-wide, then the arm's overrides (later ones win)
    lr_scale: float = 1.0  # multiplier of the run's default learning rate
    cooldown: float | None = None  # WSD-S branch: decays to this multiple of the budget
    main: str | None = None  # WSD-S branch: the main run it starts from



def to_grid_config(node: Any) -> GridConfig:
    """A validated GridConfig from the composed `grid` node (DictConfig or dict)."""
    from leviathan.typed_config import to_config

    if node is None or not hasattr(node, "keys"):
        raise GridError("grid: choose a grid with +grid=<name> (see conf/grid/)")
    return validate(to_config(GridConfig, node, "grid", GridError))


def validate(grid: GridConfig) -> GridConfig:
    """The per-field checks (`_checks`), then the rules that tie fields together.

    First, the per-size and per-arm entries (seeds_by_size, lr_sizes, seeds_by_arm,
    power.noise) of sizes or arms the grid no longer has are dropped, one note each: a shipped
    grid narrowed on the command line (`grid.sizes=[...]`, `~grid.arms.factorized`) plans
    without copying its YAML. Then every problem left is reported at once, in one GridError,
    each with the override that fixes it."""
    _drop_stale(grid)
    problems = [*_field_problems(grid), *_shape_problems(grid), *_arm_problems(grid),
                *_allocation_problems(grid)]
    if len(problems) == 1:
        raise GridError(problems[0])
    if problems:
        raise GridError(f"grid: {len(problems)} problems: " + "; ".join(problems))
    return grid


def _ov(key: str, value: Any) -> str:
    """A command-line override setting `key` to `value`, quoted for a shell where needed."""
    def fmt(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "[" + ",".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(f"{k}:{fmt(x)}" for k, x in v.items()) + "}"
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    text = f"{key}={fmt(value)}"
    return f"'{text}'" if any(c in text for c in "[]{},") else text


def _problem(key: str, what: str, fix: str) -> str:
    return f"grid.{key}: {what} (fix: {fix})"


def _is_size(size: str) -> bool:
    """Whether `size` names a model config (conf/model/<size>.yaml, or a site's): an entry of
    a size the grid dropped, not a typo."""
    import os

    from leviathan.typed_config import SITE_ENV, conf_dir

    roots = [conf_dir(), *([Path(os.environ[SITE_ENV])] if os.environ.get(SITE_ENV) else [])]
    return any((root / "model" / f"{size}.yaml").is_file() for root in roots)


def _drop_stale(grid: GridConfig) -> None:
    """Drop the entries of sizes (model configs) and arms (ARM_NAMES) the grid does not have,
    one note each; an empty lr_sizes left by it means that no size sweeps the LR."""
    sizes = {*grid.sizes, *grid.dense_sizes}
    gone = "is not in grid.sizes or grid.dense_sizes"
    for size in [s for s in grid.seeds_by_size if s not in sizes and _is_size(s)]:
        del grid.seeds_by_size[size]
        log.warning(f"note: grid.seeds_by_size: dropped {size} ({size} {gone})")
    if grid.lr_sizes:
        for size in [s for s in grid.lr_sizes if s not in sizes and _is_size(s)]:
            grid.lr_sizes.remove(size)
            log.warning(f"note: grid.lr_sizes: dropped {size} ({size} {gone})"
                        + ("; no size sweeps the LR now (grid.lr_sizes=null: every size does)"
                           if not grid.lr_sizes else ""))
    for key, entries in (("seeds_by_arm", grid.seeds_by_arm), ("power.noise", grid.power.noise)):
        for arm in [a for a in entries if a in ARM_NAMES and a not in grid.arms]:
            del entries[arm]
            log.warning(f"note: grid.{key}: dropped {arm} (not an arm of this grid: "
                        f"{', '.join(grid.arms) or 'none'})")


def _field_problems(grid: GridConfig) -> list[str]:
    from dataclasses import fields

    from leviathan.typed_config import field_problems

    out = []
    if not grid.name or grid.name == "???":
        out.append(_problem("name", "a grid needs a name", _ov("grid.name", "my_grid")))
    for prefix, obj in (("", grid), ("lr_rule.", grid.lr_rule), ("power.", grid.power)):
        defaults = {f.name: (f.default_factory() if callable(f.default_factory) else f.default)
                    for f in fields(obj)}
        out += [_problem(f"{prefix}{name}", f"{what}, got {getattr(obj, name)!r}",
                         _ov(f"grid.{prefix}{name}", defaults[name]))
                for name, what in field_problems(obj)]
    return out


def _shape_problems(grid: GridConfig) -> list[str]:
    """Sizes, budgets, seeds, LRs, cooldowns and the grid-wide overrides."""
    out = []
    if not grid.sizes and not grid.dense_sizes:
        out.append(_problem("sizes", "list at least one model size", _ov("grid.sizes",
                                                                          ["v1/109M"])))
    key = "tokens" if grid.tokens is not None else "tokens_per_param"
    if not getattr(grid, key):
        out.append(_problem(key, f"must be a non-empty list of positive numbers, got "
                                 f"{getattr(grid, key)!r}", _ov("grid.tokens_per_param", [20])
                            if key == "tokens_per_param" else "grid.tokens=null"))
    for key, default in (("seeds", [0]), ("lr", [1.0]), ("cooldowns", [])):
        values = getattr(grid, key)
        if len(set(values)) != len(values) or (key != "cooldowns" and not values):
            out.append(_problem(key, f"must be a {'' if key == 'cooldowns' else 'non-empty '}"
                                     f"list of distinct values, got {values!r}",
                                _ov(f"grid.{key}", list(dict.fromkeys(values)) or default)))
    bad = [o for o in grid.overrides if "=" not in o]
    if bad:
        out.append(_problem("overrides", f"{bad} are not key=value overrides",
                            _ov("grid.overrides", [o for o in grid.overrides if "=" in o])))
    return out


def _arm_problems(grid: GridConfig) -> list[str]:
    if not grid.arms:
        return [_problem("arms", f"give the arms to run, among {', '.join(ARM_NAMES)}",
                         _ov("+grid.arms.dense", ["model.arm=dense"]))]
    out = []
    for arm, ovr in grid.arms.items():
        if arm not in ARM_NAMES:
            out.append(_problem(f"arms.{arm}", f"unknown arm; allowed values: "
                                               f"{', '.join(ARM_NAMES)}", f"~grid.arms.{arm}"))
        elif not isinstance(ovr, list) or not all(isinstance(o, str) and "=" in o for o in ovr):
            out.append(_problem(f"arms.{arm}", "must be a list of key=value overrides",
                                _ov(f"grid.arms.{arm}", [f"model.arm={arm}"])))
    for control in CONTROLS:
        if control in grid.arms and "leviathan" not in grid.arms:
            out.append(_problem(f"arms.{control}", f"the {control} control needs its Leviathan "
                                "partner (a control is only read against Leviathan)",
                                f"~grid.arms.{control}"))
    if grid.dense_sizes and "dense" not in grid.arms:
        out.append(_problem("dense_sizes", "Dense-only rungs need arms.dense (their overrides)",
                            "grid.dense_sizes=[]"))
    return out


def _allocation_problems(grid: GridConfig) -> list[str]:
    """seeds_by_arm, seeds_by_size, lr_sizes and the power model name what the grid has (what
    _drop_stale left: unknown arms, names that are no model config) with valid values."""
    out = []
    sizes = [*grid.sizes, *grid.dense_sizes]
    for arm, seeds in grid.seeds_by_arm.items():
        if arm not in grid.arms:
            out.append(_problem(f"seeds_by_arm.{arm}", f"not an arm of this grid "
                                f"({', '.join(grid.arms)})", f"~grid.seeds_by_arm.{arm}"))
        elif not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            out.append(_problem(f"seeds_by_arm.{arm}", f"must be a non-empty list of distinct "
                                f"seeds >= 0, got {seeds!r}",
                                _ov(f"grid.seeds_by_arm.{arm}",
                                    [s for s in dict.fromkeys(seeds) if s >= 0] or [0])))
    for size, n in grid.seeds_by_size.items():
        if size not in sizes:
            out.append(_problem(f"seeds_by_size.{size}", f"not in sizes or dense_sizes "
                                f"({', '.join(sizes)}) and no model config",
                                f"remove {size} from grid.seeds_by_size where it is set"))
        elif not isinstance(n, int) or isinstance(n, bool) or n < 1:
            out.append(_problem(f"seeds_by_size.{size}", f"must be a whole number of seeds "
                                f">= 1, got {n!r}", _ov("grid.seeds_by_size", {size: 1})))
    unknown = [s for s in grid.lr_sizes or () if s not in sizes]
    if unknown:
        out.append(_problem("lr_sizes", f"{unknown} are not in sizes or dense_sizes "
                            f"({', '.join(sizes)}) and no model config",
                            _ov("grid.lr_sizes", [s for s in grid.lr_sizes if s in sizes])))
    swept = [s for s in grid.sizes if grid.lr_sizes is None or s in grid.lr_sizes]
    if grid.power.lr_estimator == "pooled" and len(grid.lr) >= 2 and len(swept) < 3:
        out.append(_problem("power.lr_estimator", f"pooled chooses each size's LR on its arm's "
                            f"other swept sizes and needs 3 or more; grid.lr_sizes sweeps "
                            f"{len(swept)} ({', '.join(swept) or 'none'})",
                            "grid.power.lr_estimator=mean"))
    return out + _noise_problems(grid)


def _noise_problems(grid: GridConfig) -> list[str]:
    out = []
    for arm, sd in grid.power.noise.items():
        if arm not in (*ARM_NAMES, "all"):
            out.append(_problem(f"power.noise.{arm}", f"not an arm ({', '.join(ARM_NAMES)}, "
                                "all)", f"~grid.power.noise.{arm}"))
        elif not isinstance(sd, int | float) or not 0 < float(sd) < 0.5:
            out.append(_problem(f"power.noise.{arm}", f"must be a relative sd in (0, 0.5), "
                                f"got {sd!r}", f"grid.power.noise.{arm}=0.01"))
    return out


def _budget_label(kind: str, value: float) -> str:
    if kind == "tokens":
        return f"{_si(value)}tok"
    return f"{value:g}N"


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:g}"


def _num(x: float) -> str:
    return f"{x:g}".replace(".", "p")


def arm_seeds(grid: GridConfig, arm: str, size: str | None = None) -> list[int]:
    """The seeds `arm` runs (at `size`): grid.seeds_by_arm's, else grid.seeds (the first
    grid.seeds_by_size[size] of them)."""
    seeds = list(grid.seeds_by_arm.get(arm, grid.seeds))
    cap = grid.seeds_by_size.get(size) if size is not None else None
    return seeds[:cap] if cap is not None else seeds


def _variants(grid: GridConfig, sweep_name: str, pair: str, arm: str, size: str,
              budget: tuple[str, float], seed: int, overrides: tuple[str, ...],
              scales: list[float]) -> list[RunSpec]:
    """One arm of one pair: each LR variant, each main run followed by its cooldown branches."""
    runs = []
    for scale in scales:
        name = f"{sweep_name}-{pair}-{arm}" + (f"-lr{_num(scale)}" if len(grid.lr) > 1 else "")
        runs.append(RunSpec(name=name, pair=pair, arm=arm, size_config=size, budget=budget,
                            seed=seed, overrides=overrides, lr_scale=float(scale)))
        runs += [RunSpec(name=f"{name}-cd{_num(m)}", pair=pair, arm=arm, size_config=size,
                         budget=budget, seed=seed, overrides=overrides, lr_scale=float(scale),
                         cooldown=float(m), main=name) for m in sorted(grid.cooldowns)]
    return runs


def expand(grid: GridConfig, sweep_name: str) -> list[RunSpec]:
    """Every run of the grid in a stable order: per (size, budget, seed) the pair's arms (dense
    first), each arm's LR variants, each main run followed by its cooldown branches; then the
    Dense-only rungs."""
    kind = "tokens" if grid.tokens is not None else "tokens_per_param"
    budgets = grid.tokens if grid.tokens is not None else grid.tokens_per_param
    arms = [a for a in ARM_NAMES if a in grid.arms]
    runs: list[RunSpec] = []
    rungs = [(s, arms) for s in grid.sizes] + [(s, ["dense"]) for s in grid.dense_sizes]
    for size, size_arms in rungs:
        scales = grid.lr if grid.lr_sizes is None or size in grid.lr_sizes else [1.0]
        for budget in budgets:
            for seed in sorted({s for a in size_arms for s in arm_seeds(grid, a, size)}):
                size_label = size.rsplit("/", 1)[-1]
                pair = f"{size_label}-{_budget_label(kind, budget)}-s{seed}"
                for arm in (a for a in size_arms if seed in arm_seeds(grid, a, size)):
                    # the arm's own overrides beat the grid-wide ones (the command line beats
                    # both: it is applied last, when each run is composed)
                    overrides = (f"model={size}", *grid.overrides, *grid.arms[arm])
                    runs += _variants(grid, sweep_name, pair, arm, size, (kind, float(budget)),
                                      int(seed), overrides, scales)
    return runs
