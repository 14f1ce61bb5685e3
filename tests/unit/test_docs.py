"""The docs stay true: the config reference is the generated one; the README's commands exist."""

from __future__ import annotations

import re

import pytest
from helpers import REPO

from leviathan.configdoc import render


def test_config_reference_is_up_to_date():
    committed = (REPO / "docs" / "CONFIG.md").read_text()
    assert committed == render(), ("docs/CONFIG.md is stale: run "
                                   "`python -m leviathan.configdoc > docs/CONFIG.md`")


def test_readme_make_targets_exist_and_every_target_has_help():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z_-]+):.*?## ", makefile, flags=re.M))
    assert {"install", "test", "demo", "fit-scaling", "dashboard", "lint", "bench"} <= targets
    declared = set(re.findall(r"^([a-z][a-zA-Z_-]*):", makefile, flags=re.M))
    assert declared <= targets | {"$(VENV)/.installed"}, "every target needs a ## help line"
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"`make ([a-z-]+)", readme):
        assert target in targets, f"README mentions `make {target}`, which the Makefile lacks"
    for grid in re.findall(r"\+grid=([a-z_]+)", readme):
        assert (REPO / "conf" / "grid" / f"{grid}.yaml").exists(), grid


def test_every_schema_key_has_a_comment_and_every_option_composes():
    """The schemas are the single source of each key's meaning (docs/CONFIG.md comes from
    them); every option file of every group composes into its schema."""
    import dataclasses

    from leviathan.config import compose, conf_dir
    from leviathan.configdoc import field_comments, schemas

    for group, classes in schemas().items():
        for cls in classes:
            missing = [f.name for f in dataclasses.fields(cls)
                       if not field_comments(cls).get(f.name)]
            assert not missing, f"{cls.__name__}: keys without a comment: {missing}"
        if group == "grid":
            continue  # grids are composed by the sweep planner (tests/unit/test_sweep_plan.py)
        for path in sorted((conf_dir() / group).rglob("*.yaml")):
            option = path.relative_to(conf_dir() / group).with_suffix("").as_posix()
            cfg = compose("sweep", [f"{group}={option}"])
            assert cfg[group] is not None, option


def _readme_commands(module: str) -> list[list[str]]:
    """The README's `python -m <module> ...` command lines, as argument lists (comments off)."""
    import shlex

    return [shlex.split(line, comments=True)[3:] for line in
            (REPO / "README.md").read_text().splitlines()
            if line.startswith(f"python -m {module} ") and not line.endswith("\\")]


def test_readme_says_to_activate_the_environment_before_its_first_python_command():
    """Issue 34.6: `python -m ...` after `make install` needs .venv; the README says so where
    its commands start."""
    readme = (REPO / "README.md").read_text()
    first = re.search(r"^(\.venv/bin/)?python -m ", readme, flags=re.M)
    assert first and (first.group(1) or "source .venv/bin/activate" in readme[:first.start()])


@pytest.mark.slow
def test_readme_narrows_a_shipped_grid_and_drops_an_arm(tmp_path, capsys):
    """Issue 34.4: the README's commands that narrow a shipped grid and drop an arm dry-run
    (here at one seed and one LR, without the power analysis, to stay fast), with one note per
    entry of a size or arm the grid no longer has."""
    import pandas as pd

    from leviathan.cli.sweep import sweep
    from leviathan.config import compose
    from leviathan.logs import setup_logging

    commands = [c for c in _readme_commands("leviathan.sweep")
                if any(a.startswith(("grid.sizes=", "~grid.arms.")) for a in c)]
    assert len(commands) == 2, commands
    cheap = ["grid.power.enabled=false", "grid.lr=[1.0]", "grid.seeds=[0]",
             "grid.seeds_by_arm.leviathan=[0]", "grid.seeds_by_arm.factorized=[0]"]
    setup_logging()
    for i, args in enumerate(commands):
        args = [*args, *cheap, f"paths.root_dir={tmp_path / str(i)}"]
        capsys.readouterr()
        assert sweep(compose("sweep", args), args) == 0
        out = capsys.readouterr()
        plan = pd.read_csv(tmp_path / str(i) / "sweeps" / "isoparametric" / "plan.csv")
        notes = [n for n in out.err.splitlines() if n.startswith("note: grid.")]
        assert "Dry run: nothing launched." in out.out and len(notes) == len(set(notes))
        if "~grid.arms.factorized" in args:
            assert notes == ["note: grid.seeds_by_arm: dropped factorized (not an arm of this "
                             "grid: dense, leviathan)"]
            assert set(plan.arm) == {"dense", "leviathan"} and plan["size"].nunique() == 8
        else:
            assert [n.split(" (")[0] for n in notes] == [
                "note: grid.seeds_by_size: dropped v1/231M", "note: grid.seeds_by_size: "
                "dropped v1/296M", "note: grid.seeds_by_size: dropped v1/421M",
                "note: grid.lr_sizes: dropped v1/231M", "note: grid.lr_sizes: dropped v1/296M",
                "note: grid.lr_sizes: dropped v1/421M"]
            assert set(plan["size"]) == {"60M", "109M", "164M", "752M", "989M"}
            assert set(plan.arm) == {"dense", "leviathan", "factorized"}


def test_readme_run_counts_are_the_plans(compose):
    """Issue 34.6: the runs the README gives a grid are the runs its plan has (the planner makes
    one run per entry of `expand`; test_every_grid_plans holds the plans to it)."""
    from leviathan.sweep.grid import expand, to_grid_config

    readme = (REPO / "README.md").read_text()
    said = re.search(r"`grid=isoparametric_controls` \(the isoparametric grid plus them: (\d+)\s+"
                     r"runs instead of `isoparametric`'s (\d+)\)", readme)
    demo = re.search(r"smoke sweep \((\d+) runs\)", readme)
    assert said and demo
    for grid, n in (("isoparametric_controls", said.group(1)), ("isoparametric", said.group(2)),
                    ("smoke", demo.group(1))):
        runs = expand(to_grid_config(compose("sweep", [f"+grid={grid}"]).grid), grid)
        assert len(runs) == int(n), (grid, len(runs), n)
