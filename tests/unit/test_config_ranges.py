"""Every size, count and rate of every schema is range-checked, with errors naming the key.

For each schema dataclass, each numeric field (int/float, optional or a list of them) that
carries a check in its `_checks` gets 0 (where 0 is invalid), a negative value and a
non-numeric string, fed through the group's own loader; the error is the group's class and its
message one line starting `<group>.<field>:` (`<group>.<field>[i]:` for a list's item that
OmegaConf cannot convert). A completeness check keeps every numeric field
checked, or listed in FREE with the reason it is left free.
"""

from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from leviathan.data.config import DataConfig, DataError, to_data_config
from leviathan.eval.config import EvalConfig, EvalConfigError, eval_config
from leviathan.models.config import ConfigError, LevConfig, ModelConfig, to_model_config
from leviathan.sweep.grid import GridConfig, GridError, LRRule, to_grid_config
from leviathan.sweep.launcher_config import (
    LauncherError,
    LocalLauncherConfig,
    SlurmLauncherConfig,
    to_launcher_config,
)
from leviathan.tracking.config import TrackingConfig, tracking_config
from leviathan.training.config import TrainConfigError, TrainerConfig, trainer_config
from leviathan.typed_config import field_checks

_FOLDER = {"folder": "/tmp/submitit"}  # the default interpolates paths.scratch_dir
_GRID = {"name": "g", "sizes": ["v1/109M"], "arms": {"dense": ["model.arm=dense"]}}

# schema -> (group in the messages, error class, load {field: value} through the group's loader)
SCHEMAS = {
    TrainerConfig: ("trainer", TrainConfigError, lambda d: trainer_config(d)),
    TrackingConfig: ("tracking", TrainConfigError, lambda d: tracking_config(d)),
    DataConfig: ("data", DataError, lambda d: to_data_config({"path": "x.jsonl", **d})),
    ModelConfig: ("model", ConfigError, lambda d: to_model_config(d)),
    LevConfig: ("model.lev", ConfigError, lambda d: to_model_config({"lev": d})),
    GridConfig: ("grid", GridError, lambda d: to_grid_config({**_GRID, **d})),
    LRRule: ("grid.lr_rule", GridError, lambda d: to_grid_config({**_GRID, "lr_rule": d})),
    LocalLauncherConfig: ("launcher", LauncherError,
                          lambda d: to_launcher_config({"name": "local", **_FOLDER, **d})),
    SlurmLauncherConfig: ("launcher", LauncherError,
                          lambda d: to_launcher_config({"name": "slurm", **_FOLDER, **d})),
    EvalConfig: ("eval", EvalConfigError, lambda d: eval_config(d)),
}

# numeric fields deliberately without a range check, and why
FREE = {
    (TrainerConfig, "betas"): "a pair, checked by hand: two numbers in [0, 1)",
    (LRRule, "exponent"): "any real exponent (negative in practice: OLMo's -1/3)",
    (EvalConfig, "seed"): "any integer the harness's seeding accepts",
    (GridConfig, "seeds_by_size"): "a map size -> seeds, checked by hand (a size of the grid, a "
                                   "whole number >= 1): test_seeds_by_size_errors_name_the_key",
}


def _kind(t: typing.Any) -> str | None:
    """'scalar' for int/float (optional or a union), 'list' for a list of them, else None."""
    args = typing.get_args(t)
    if typing.get_origin(t) is list:
        return "list" if args and args[0] in (int, float) else None
    kinds = (t, *args)
    return "scalar" if any(k in (int, float) for k in kinds) else None


def _numeric_fields(cls: type) -> dict[str, str]:
    hints = typing.get_type_hints(cls)
    return {f.name: k for f in dataclasses.fields(cls) if (k := _kind(hints[f.name]))}


def _cases():
    for cls, (group, _err, _load) in SCHEMAS.items():
        checks = field_checks(cls)
        for name, kind in _numeric_fields(cls).items():
            if name not in checks:
                continue
            for value in (0, -1, "abc"):
                value = [value] if kind == "list" else value
                if value in (0, [0]) and checks[name](value) is None:
                    continue  # 0 is a valid setting of this field
                yield pytest.param(cls, name, value, id=f"{group}.{name}={value!r}")


@pytest.mark.parametrize(("cls", "name", "value"), list(_cases()))
def test_out_of_range_values_fail_naming_the_key(cls, name, value):
    group, err, load = SCHEMAS[cls]
    with pytest.raises(err) as info:
        load({name: value})
    msg = str(info.value)
    assert re.match(rf"{re.escape(group)}\.{name}(\[\d+\])?: ", msg), msg  # [i]: a list's item
    assert "\n" not in msg


def test_every_numeric_field_is_checked_or_free_with_a_reason():
    unchecked = [f"{cls.__name__}.{name}" for cls in SCHEMAS
                 for name in _numeric_fields(cls)
                 if name not in field_checks(cls) and (cls, name) not in FREE]
    assert not unchecked, f"numeric fields without a range check: {unchecked}"
    stale = [f"{cls.__name__}.{name}" for cls, name in FREE if name in field_checks(cls)]
    assert not stale, f"listed as free but checked: {stale}"


def test_checks_name_only_real_fields():
    for cls in SCHEMAS:
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(field_checks(cls)) <= names, cls.__name__


def test_defaults_pass_their_checks():
    for _group, _err, load in SCHEMAS.values():
        load({})


@pytest.mark.parametrize("value, message", [
    ({"v1/109M": 0}, r"grid\.seeds_by_size\.v1/109M: must be a whole number of seeds >= 1"),
    ({"v1/109M": -2}, r"grid\.seeds_by_size\.v1/109M: must be a whole number of seeds >= 1"),
    ({"v1/999M": 2}, r"grid\.seeds_by_size\.v1/999M: not in sizes or dense_sizes"),
])
def test_seeds_by_size_errors_name_the_key(value, message):
    with pytest.raises(GridError, match=message):
        to_grid_config({**_GRID, "seeds_by_size": value})


def _grid_notes(compose, caplog, overrides: list[str]):
    """(validated grid, its notes) of the sweep config composed with `overrides`."""
    import logging

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="leviathan.sweep.grid"):
        grid = to_grid_config(compose("sweep", overrides).grid)
    return grid, [r.getMessage() for r in caplog.records if r.name == "leviathan.sweep.grid"]


def test_a_shipped_grid_narrows_and_drops_an_arm_from_the_command_line(compose, caplog):
    """Issue 34.4: the per-size and per-arm entries of sizes and arms a narrowed grid no longer
    has are dropped, one note each; what is left plans those sizes and arms only."""
    from leviathan.sweep.grid import expand

    grid, notes = _grid_notes(compose, caplog, [
        "+grid=isoparametric", "grid.sizes=[v1/60M,v1/109M,v1/164M]"])
    gone = "is not in grid.sizes or grid.dense_sizes"
    assert notes == [*(f"note: grid.seeds_by_size: dropped {s} ({s} {gone})"
                       for s in ("v1/231M", "v1/296M", "v1/421M")),
                     *(f"note: grid.lr_sizes: dropped {s} ({s} {gone})"
                       for s in ("v1/231M", "v1/296M", "v1/421M"))]
    assert grid.seeds_by_size == {"v1/164M": 3}
    assert grid.lr_sizes == ["v1/60M", "v1/109M", "v1/164M"]
    runs = expand(grid, "t")
    assert {r.size_config for r in runs} == {"v1/60M", "v1/109M", "v1/164M", "v1/752M",
                                             "v1/989M"}
    assert {r.size_config for r in runs if r.lr_scale != 1} == {"v1/60M", "v1/109M", "v1/164M"}

    # the README's `~grid.arms.factorized`, on both grids that train it
    for name, arms in (("isoparametric", {"dense", "leviathan"}),
                       ("isoparametric_controls", {"dense", "leviathan", "factorized_wide",
                                                   "lev_codebooks"})):
        grid, notes = _grid_notes(compose, caplog, [
            f"+grid={name}", "~grid.arms.factorized", "+grid.power.noise.factorized=0.02"])
        assert notes == [f"note: grid.seeds_by_arm: dropped factorized (not an arm of this grid: "
                         f"{', '.join(grid.arms)})",
                         f"note: grid.power.noise: dropped factorized (not an arm of this grid: "
                         f"{', '.join(grid.arms)})"]
        assert {r.arm for r in expand(grid, "t")} == arms and "factorized" not in grid.seeds_by_arm

    # every size that swept the LR gone: an empty lr_sizes, no size sweeps it (null: every size)
    grid, notes = _grid_notes(compose, caplog, ["+grid=decoupled", "grid.sizes=[v2/400M]"])
    assert grid.lr_sizes == [] and "no size sweeps the LR now" in notes[-1]
    assert sum("grid.lr_sizes: dropped" in n for n in notes) == 2
    assert {r.lr_scale for r in expand(grid, "t")} == {1.0}


def test_every_problem_of_a_grid_at_once_with_the_override_that_fixes_it(compose, caplog):
    """Issue 34.4: one GridError lists every problem left after the drops, each naming its key
    and the override that fixes it; applying those overrides gives a grid that validates. A
    name that is no model config (a typo) is a problem, not a drop."""
    import shlex

    bad = ["+grid=isoparametric", "~grid.arms.leviathan", "grid.seeds=[0,0]",
           "grid.power.ladders=5", "grid.lr_sizes=[v1/60m,v1/421M]",
           "+grid.power.noise.levi=0.1", "grid.seeds_by_arm.factorized=[3,3]"]
    with pytest.raises(GridError) as info:
        _grid_notes(compose, caplog, bad)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("grid: 6 problems: "), msg
    problems = msg.removeprefix("grid: 6 problems: ").split("; ")
    keys = [p.split(":", 1)[0] for p in problems]
    assert keys == ["grid.power.ladders", "grid.seeds", "grid.arms.factorized",
                    "grid.seeds_by_arm.factorized", "grid.lr_sizes", "grid.power.noise.levi"]
    fixes = [shlex.split(re.search(r"\(fix: (.*)\)$", p).group(1))[0] for p in problems]
    assert fixes == ["grid.power.ladders=200", "grid.seeds=[0]", "~grid.arms.factorized",
                     "grid.seeds_by_arm.factorized=[3]", "grid.lr_sizes=[v1/421M]",
                     "~grid.power.noise.levi"]
    grid, notes = _grid_notes(compose, caplog, [*bad, *fixes])
    assert grid.arms.keys() == {"dense"} and grid.lr_sizes == ["v1/421M"]
    assert notes == [f"note: grid.seeds_by_arm: dropped {arm} (not an arm of this grid: dense)"
                     for arm in ("leviathan", "factorized")]
    with pytest.raises(GridError, match=r"^grid\.lr_sizes: \['v1/60m'\] are not in sizes"):
        _grid_notes(compose, caplog, ["+grid=isoparametric", "grid.lr_sizes=[v1/60m]"])
