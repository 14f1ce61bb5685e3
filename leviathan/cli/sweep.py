"""The sweep command, `python -m leviathan.sweep +grid=<name> [sweep.dry_run=true] [overrides]`
(leviathan/sweep/__main__.py is its Hydra wrapper).

Composes every run of the grid, validates all of them, prints and writes the plan
(sweeps/<sweep>/plan.csv, manifest.json, configs/), then launches what is not finished yet. A dry
run adds the power analysis of the plan (analysis.power: the grid's `power` model simulated
through the analysis), printed and written to sweeps/<sweep>/power.csv.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from leviathan.config import conf_dir

log = logging.getLogger(__name__)


def sweep(cfg: DictConfig, task_overrides: list[str]) -> int:
    from leviathan.sweep.grid import GridError
    from leviathan.sweep.launch import launch
    from leviathan.sweep.plan import (
        dry_run_dir,
        format_plan,
        launched_manifest,
        make_plan,
        write_plan,
    )
    from leviathan.sweep.space import scratch_warning

    if cfg.get("grid") is None:
        grids = sorted(p.stem for p in (conf_dir() / "grid").glob("*.yaml"))
        raise GridError(f"grid: choose a grid with +grid=<name>; available: {', '.join(grids)}")
    root = Path(str(cfg.paths.root_dir)).resolve()
    plan = make_plan(cfg, task_overrides, root)
    sweep_dir = Path(str(cfg.paths.sweeps_dir)).resolve() / plan.name
    records = sweep_dir
    if cfg.sweep.dry_run and launched_manifest(sweep_dir) is not None:
        # a launched sweep's records change only when a launch changes them
        records = dry_run_dir(sweep_dir)
    write_plan(plan, records)
    print(format_plan(plan))
    log.info(f"\nPlan written to {records / 'plan.csv'} and {records / 'manifest.json'}")
    if records != sweep_dir:
        log.info(_against_launched(plan, launched_manifest(sweep_dir), sweep_dir))
    warning = scratch_warning(plan)  # room for the checkpoints? (a warning, not a refusal)
    if warning:
        log.warning(warning)
    if cfg.sweep.dry_run:
        failed = power_report(plan, records)
        if failed and cfg.sweep.get("strict_power"):
            from leviathan.sweep.grid import GridError

            raise GridError(f"sweep.strict_power: the power analysis failed {len(failed)} "
                            f"check(s) (the first: {failed[0]}); change the design or the "
                            "stated truth (grid.power), or set sweep.strict_power=false")
        log.info("Dry run: nothing launched.")
        return 0
    return launch(plan, cfg, sweep_dir)


def _against_launched(plan, manifest: dict, sweep_dir: Path) -> str:
    """What a dry run of a launched sweep would change, run by run."""
    from leviathan.sweep.plan import plan_changes

    diff = plan_changes(plan, manifest)
    head = (f"Sweep {plan.name} was launched: its records ({sweep_dir}: manifest.json, configs/, "
            "plan.csv) are left as they are; this dry run is written beside them.")
    if not any(diff.values()):
        return f"{head}\nThe plan is the launched one: every run has its launched config hash."
    what = {"changed": "a config hash other than the launched run's", "new": "not in the "
            "launched sweep", "dropped": "launched, not in this plan"}
    lines = [head]
    for key, runs in diff.items():
        if runs:
            more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
            lines.append(f"  {len(runs)} run(s) {key}, {what[key]}: {', '.join(runs[:5])}{more}")
    return "\n".join(lines)


def power_report(plan, sweep_dir: Path) -> list[str]:
    """The power analysis of the plan (grid.power: simulated ladders through the analysis):
    printed, and written to sweeps/<sweep>/power.csv; returns its failed checks."""
    if not plan.grid.get("power", {}).get("enabled", False):
        return []
    from analysis.power.model import cells_from_plan, design_cost, model_from_grid
    from analysis.power.simulate import simulate
    from analysis.report.power import failed_checks, power_md
    from leviathan.errors import LeviathanError

    cells = cells_from_plan(plan.frame())
    model = model_from_grid(plan.grid.get("power", {}))
    try:
        table = simulate(cells, model)
    except LeviathanError as e:  # e.g. one size: no power law to fit, nothing to predict
        print(f"\nPower analysis: not possible for this plan ({e}); "
              "grid.power.enabled=false leaves it out")
        return []
    path = Path(sweep_dir) / "power.csv"
    table.assign(gpu_hours=design_cost(cells)).to_csv(path, index=False)
    print("\n" + power_md(table, cells, model) + f"\n(written to {path})")
    return failed_checks(table)


def run(cfg: DictConfig, task_overrides: list[str]) -> int:
    """sweep(), its exit status; a LeviathanError (what the user can fix) becomes one line
    `error: <message>` on stderr and status 2, anything else shows its traceback."""
    from leviathan.errors import LeviathanError

    try:
        return sweep(cfg, task_overrides)
    except LeviathanError as e:
        log.error(f"error: {e}")
        return 2

