"""The docs stay true: the config reference is the generated one; the README's commands exist."""

from __future__ import annotations

import re

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
