"""The design command, `python -m leviathan.sweep.design +grid=<family> design.budget_gpu_h=<B>
[design.name=...]` (leviathan/sweep/design.py is its Hydra wrapper).

Searches how a family's grid spends a GPU-hour budget (seeds per arm, which sizes sweep the LR,
Dense-only rungs, the largest pair) for the design whose predicted 95% half-width of a headline
number (design.target, default the pooled LEV over its control) is smallest, prints the best few
with their cost and widths, and writes the winner as conf/grid/<design.name>.yaml (or under
design.out), which `python -m leviathan.sweep +grid=<design.name>` launches unchanged. The
search itself is the analysis's (analysis/power/design.py); each (arm, size)'s cost comes from
the sweep's own plan of the grid.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from leviathan.config import conf_dir

log = logging.getLogger(__name__)


def base_plan(cfg, task_overrides: list[str]):
    """The grid's plan at one seed and the rule's LR: each (arm, size)'s cost per run."""
    from omegaconf import OmegaConf, open_dict

    from leviathan.sweep.plan import make_plan

    base = cfg.copy()
    with open_dict(base):
        OmegaConf.update(base, "grid.seeds", [0], merge=False)
        OmegaConf.update(base, "grid.lr", [1.0], merge=False)
        OmegaConf.update(base, "grid.seeds_by_arm", {}, merge=False)
        OmegaConf.update(base, "grid.seeds_by_size", {}, merge=False)
        OmegaConf.update(base, "grid.lr_sizes", None, merge=False)
        OmegaConf.update(base, "grid.cooldowns", [], merge=False)
    return make_plan(base, task_overrides, Path(str(cfg.paths.root_dir)).resolve())


def write_grid(path: Path, name: str, grid: dict, header: str) -> Path:
    import yaml

    comment = "\n".join("# " + line for line in header.splitlines())
    body = yaml.safe_dump({"defaults": ["schema", "_self_"], "name": name, **grid},
                          sort_keys=False, default_flow_style=None, width=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(comment + "\n" + body)
    return path


def run_search(base_frame, grid: dict, spec: dict) -> tuple[str, dict, str]:
    """The search (analysis.power.design) and what the command shows of it: (the best designs'
    table, the winner as a grid dict, its header comment)."""
    from analysis.power.design import designed_grid, search_design
    from analysis.report.power import design_md

    s = search_design(base_frame, grid, spec)
    winner, header = designed_grid(grid, s.found[0], s.budget, s.target, s.model, s.reference)
    return design_md(s.found, s.budget, s.target, s.reference), winner, header


def design(cfg, task_overrides: list[str]) -> int:
    from dataclasses import asdict

    from omegaconf import OmegaConf

    from leviathan.sweep.grid import GridError, to_grid_config

    if cfg.get("grid") is None:
        raise GridError("grid: choose a family's grid with +grid=<name> (see conf/grid/)")
    grid = to_grid_config(cfg.grid)
    spec = OmegaConf.to_container(cfg.design, resolve=True)
    plan = base_plan(cfg, task_overrides)
    text, winner, header = run_search(plan.frame(), {**asdict(grid)}, spec)
    print(text)
    name = spec.get("name") or f"{grid.name}_designed"
    folder = Path(spec["out"]) if spec.get("out") else conf_dir() / "grid"
    path = write_grid(folder / f"{name}.yaml", name, winner, header)
    print(f"\nWrote the best design to {path}: python -m leviathan.sweep +grid={name}")
    return 0


def run(cfg: DictConfig, task_overrides: list[str]) -> int:
    """design(), its exit status; a LeviathanError becomes one line `error: ...`, status 2."""
    from leviathan.errors import LeviathanError

    try:
        return design(cfg, task_overrides)
    except LeviathanError as e:
        log.error(f"error: {e}")
        return 2

