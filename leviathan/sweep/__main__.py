"""`python -m leviathan.sweep +grid=<name> [sweep.dry_run=true] [overrides]`.

Composes every run of the grid, validates all of them, prints and writes the plan
(sweeps/<sweep>/plan.csv, manifest.json, configs/), then launches what is not finished yet.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from leviathan.config import conf_dir, register_schemas, site_overrides

CONF = str(conf_dir())
register_schemas()
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
        grids = sorted(p.stem for p in (Path(CONF) / "grid").glob("*.yaml"))
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
        power_report(cfg, plan, records)
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


def power_report(cfg: DictConfig, plan, sweep_dir: Path) -> None:
    """The power analysis of the plan (grid.power; sweep.power_report names the function, in
    the analysis package): printed, and written to sweeps/<sweep>/power.csv."""
    if not plan.grid.get("power", {}).get("enabled", False) or not cfg.sweep.get("power_report"):
        return
    from hydra.utils import get_method

    print(get_method(str(cfg.sweep.power_report))(plan.frame(), plan.grid, sweep_dir))


@hydra.main(config_path=CONF, config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from leviathan.logs import setup_logging

    setup_logging()  # in place of Hydra's console handler: plain messages
    code = run(cfg, list(HydraConfig.get().overrides.task))
    if code:
        sys.exit(code)


def run(cfg: DictConfig, task_overrides: list[str]) -> int:
    """sweep(), its exit status; a LeviathanError (what the user can fix) becomes one line
    `error: <message>` on stderr and status 2, anything else shows its traceback."""
    from leviathan.errors import LeviathanError

    try:
        return sweep(cfg, task_overrides)
    except LeviathanError as e:
        log.error(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.argv[1:1] = site_overrides()  # $LEVIATHAN_SITE_CONF joins Hydra's search path
    main()
