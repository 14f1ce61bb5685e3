"""The `grid` config group: which sizes, arms, token budgets and seeds a sweep runs.

A grid holds only what it changes; every run starts from the single-run config
(`conf/train.yaml`) and the command line. `expand(grid, sweep_name)` turns a grid into
RunSpecs: one per (size, budget, seed, arm), the two arms of a (size, budget, seed) forming a
matched pair that sees the identical token stream and the same token count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("isoparametric", "isobody", "decoupled", "data_scaling", "smoke", "custom")
ARM_NAMES = ("dense", "leviathan")


class GridError(ValueError):
    """A grid config value is invalid; the message names the key (grid.<field>)."""


@dataclass
class GridConfig:
    name: str = "???"  # grid name; the sweep's name defaults to it
    family: str = "custom"  # experiment family (MLflow tag `family`), see FAMILIES
    sizes: list[str] = field(default_factory=list)  # model configs, e.g. v1/109M (conf/model/)
    arms: dict[str, list[str]] = field(default_factory=dict)  # arm -> overrides of that arm
    tokens_per_param: list[float] = field(default_factory=lambda: [20.0])  # budgets, x N_dense
    tokens: list[int] | None = None  # absolute token budgets instead of tokens_per_param
    budget_params: str = "total"  # N for tokens_per_param: the Dense arm's total | body count
    seeds: list[int] = field(default_factory=lambda: [0])  # model-init seeds, one pair each
    overrides: list[str] = field(default_factory=list)  # applied to every run (before the CLI)
    iso_tolerance: float = 0.02  # isoparametric pairs must match total params within this


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep, before its config is composed."""

    name: str  # unique, stable run name: <sweep>-<pair>-<arm> (scratch folder, MLflow run)
    pair: str  # matched-pair id: <size>-<budget>-s<seed>
    arm: str  # dense | leviathan
    size_config: str  # the model config, e.g. v1/109M
    budget: tuple[str, float]  # ("tokens_per_param", 20.0) or ("tokens", 1e9)
    seed: int
    overrides: tuple[str, ...]  # size + arm + grid overrides, in that order


def register_configs() -> None:
    """Register the schemas with Hydra (all groups at once: leviathan.config)."""
    from leviathan.config import register_schemas

    register_schemas()


def _bad(key: str, msg: str) -> GridError:
    return GridError(f"grid.{key}: {msg}")


def to_grid_config(node: Any) -> GridConfig:
    """A validated GridConfig from the composed `grid` node (DictConfig or dict)."""
    from leviathan.config import to_config

    if node is None or not hasattr(node, "keys"):
        raise GridError("grid: choose a grid with +grid=<name> (see conf/grid/)")
    return validate(to_config(GridConfig, node, "grid", GridError))


def validate(grid: GridConfig) -> GridConfig:
    if not grid.name or grid.name == "???":
        raise _bad("name", "a grid needs a name")
    if grid.family not in FAMILIES:
        raise _bad("family", f"{grid.family!r} is not allowed; allowed values: "
                   f"{', '.join(FAMILIES)}")
    if not grid.sizes:
        raise _bad("sizes", "list at least one model size, e.g. [v1/109M]")
    if not grid.arms:
        raise _bad("arms", f"give the arms to run, among {', '.join(ARM_NAMES)}")
    for arm, ovr in grid.arms.items():
        if arm not in ARM_NAMES:
            raise _bad(f"arms.{arm}", f"unknown arm; allowed values: {', '.join(ARM_NAMES)}")
        if not isinstance(ovr, list) or not all(isinstance(o, str) and "=" in o for o in ovr):
            raise _bad(f"arms.{arm}", "must be a list of key=value overrides")
    budgets = grid.tokens if grid.tokens is not None else grid.tokens_per_param
    key = "tokens" if grid.tokens is not None else "tokens_per_param"
    if not budgets or any(not isinstance(b, int | float) or b <= 0 for b in budgets):
        raise _bad(key, f"must be a non-empty list of positive numbers, got {budgets!r}")
    if grid.budget_params not in ("total", "body"):
        raise _bad("budget_params", f"{grid.budget_params!r}; allowed values: total, body")
    if not grid.seeds or len(set(grid.seeds)) != len(grid.seeds):
        raise _bad("seeds", f"must be a non-empty list of distinct integers, got {grid.seeds!r}")
    if not 0 < grid.iso_tolerance < 1:
        raise _bad("iso_tolerance", f"must be in (0, 1), got {grid.iso_tolerance!r}")
    for o in grid.overrides:
        if "=" not in o:
            raise _bad("overrides", f"{o!r} is not a key=value override")
    return grid


def _budget_label(kind: str, value: float) -> str:
    if kind == "tokens":
        return f"{_si(value)}tok"
    return f"{value:g}N"


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:g}"


def expand(grid: GridConfig, sweep_name: str) -> list[RunSpec]:
    """Every run of the grid, pairs adjacent (dense first), in a stable order."""
    kind = "tokens" if grid.tokens is not None else "tokens_per_param"
    budgets = grid.tokens if grid.tokens is not None else grid.tokens_per_param
    arms = [a for a in ARM_NAMES if a in grid.arms]
    runs: list[RunSpec] = []
    for size in grid.sizes:
        for budget in budgets:
            for seed in grid.seeds:
                size_label = size.rsplit("/", 1)[-1]
                pair = f"{size_label}-{_budget_label(kind, budget)}-s{seed}"
                for arm in arms:
                    overrides = (f"model={size}", *grid.arms[arm], *grid.overrides)
                    runs.append(RunSpec(name=f"{sweep_name}-{pair}-{arm}", pair=pair, arm=arm,
                                        size_config=size, budget=(kind, float(budget)),
                                        seed=int(seed), overrides=overrides))
    return runs
