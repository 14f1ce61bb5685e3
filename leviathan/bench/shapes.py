"""Model configs of a named size and a grid's arms, and trainer options, as Hydra composes them;
on a machine without Hydra, from a shapes file composed beforehand where Hydra is.

    "v1/421M"            -> the isoparametric grid's arms (the v1 family)
    "v2/1.2B"            -> the decoupled grid's arms (the v2 family)
    "debug@isobody"      -> any size with any grid's arms

With Hydra installed, every config is what `python -m leviathan.train model=<size> <the arm's
grid overrides>` composes (leviathan.config.compose; conf/local and LEVIATHAN_SITE_CONF apply).
`bench gpu` must also run on a GPU box that has torch and this package but not Hydra: there,
`use_shapes_file(path)` (bench gpu --shapes-file) makes every lookup read a JSON file written
beforehand by

    python -m leviathan.bench shapes --shapes v1/421M,v2/1.2B --out shapes.json

which holds the resolved ModelConfig of every arm of those shapes, the grids' arms and the
trainer groups' settings. tests/unit/test_bench_gpu.py checks that the file gives exactly what
Hydra composes.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.models.config import FactorizedConfig, LevConfig, ModelConfig
from leviathan.typed_config import conf_dir

GRID_OF_LADDER = {"v1": "isoparametric", "v2": "decoupled", "smoke": "smoke"}
TRAINER_OPTIONS = ("gpu", "gpu_on_cpu", "default")  # written into a shapes file
FORMAT = 1

_FILE: dict | None = None  # the shapes file in use (use_shapes_file), else None: Hydra


class ShapeError(LeviathanError, ValueError):
    """A shape, grid or trainer option that conf/ (or the shapes file) does not have; the
    message names the file."""


def use_shapes_file(path: str | Path | None) -> None:
    """Read every shape from `path` (a `bench shapes` file) from now on; None: compose again."""
    global _FILE
    if path is None:
        _FILE = None
        return
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ShapeError(f"{path}: not a readable shapes file ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ShapeError(f"{path}: not a shapes file of format {FORMAT} (write one with "
                         "`python -m leviathan.bench shapes --out FILE`)")
    _FILE = {**data, "path": str(path)}


def _compose(config_name: str, overrides: list[str], what: str):
    try:
        import omegaconf  # noqa: F401
        from hydra.errors import HydraException
    except ImportError as e:
        raise ShapeError(
            f"{what}: Hydra is not installed here, and no shapes file was given: write one "
            "where Hydra is (`python -m leviathan.bench shapes --shapes <shapes> --out FILE`) "
            "and pass it (bench gpu --shapes-file FILE)") from e

    from leviathan.config import compose

    try:
        return compose(config_name, overrides)
    except HydraException as e:
        first = str(e).splitlines()[0]
        raise ShapeError(f"{what}: {first}") from e


def _from_file(section: str, key: str, what: str) -> Any:
    table = _FILE.get(section, {})
    if key not in table:
        have = ", ".join(sorted(table)) or "none"
        raise ShapeError(f"{_FILE['path']}: no {what} (it holds: {have}); write the file again "
                         "with it (`python -m leviathan.bench shapes`)")
    return table[key]


def conf_node(group: str, name: str) -> dict[str, Any]:
    """conf/<group>/<name>.yaml composed, resolved, as a plain dict (group: trainer)."""
    if group != "trainer":
        raise ShapeError(f"conf/{group}: bench reads only the trainer group")
    if _FILE is not None:
        return dict(_from_file("trainer", name, f"trainer={name}"))
    cfg = _compose("train", [f"trainer={name}"], f"conf/trainer/{name}.yaml")
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.trainer, resolve=True)


def split_shape(spec: str) -> tuple[str, str]:
    """'v1/421M' -> ('v1/421M', 'isoparametric'); 'debug@isobody' -> ('debug', 'isobody')."""
    shape, _, grid = spec.partition("@")
    if not grid:
        ladder = shape.split("/", 1)[0] if "/" in shape else shape
        if ladder not in GRID_OF_LADDER:
            raise ShapeError(f"{spec}: name the grid whose arms to use, e.g. {shape}@isobody")
        grid = GRID_OF_LADDER[ladder]
    return shape, grid


@functools.cache
def _grid_json(grid: str, conf: str) -> str:
    path = Path(conf) / "grid" / f"{grid}.yaml"
    if not path.is_file():
        raise ShapeError(f"{path}: no such config file")
    node = _compose("sweep", [f"+grid={grid}"], str(path)).grid
    from omegaconf import OmegaConf

    return json.dumps({**OmegaConf.to_container(node, resolve=True), "path": str(path)})


def _grid(grid: str) -> dict[str, Any]:
    """conf/grid/<grid>.yaml composed and resolved, as a plain dict (composed once)."""
    return json.loads(_grid_json(grid, str(conf_dir())))


def grid_arms(grid: str) -> dict[str, list[str]]:
    """The arms of conf/grid/<grid>.yaml: arm name -> its overrides."""
    if _FILE is not None:
        return {k: list(v) for k, v in _from_file("grids", grid, f"grid {grid}").items()}
    node = _grid(grid)
    arms = node.get("arms")
    if not isinstance(arms, dict) or not arms:
        raise ShapeError(f"{node['path']}: no `arms` mapping")
    return {k: [str(o) for o in v] for k, v in arms.items()}


def grid_specs(grid: str) -> list[tuple[str, list[str]]]:
    """The shapes a grid trains, as (spec, its arms): each size of grid.sizes with every arm,
    each of grid.dense_sizes (Dense-only rungs) with the dense arm; spec = <size>@<grid>."""
    if _FILE is not None:
        node = _from_file("grid_sizes", grid, f"the sizes of grid {grid}")
    else:
        node = _grid(grid)
    arms = list(grid_arms(grid))
    return ([(f"{size}@{grid}", arms) for size in node.get("sizes") or []]
            + [(f"{size}@{grid}", ["dense"]) for size in node.get("dense_sizes") or []])


def arm_config(spec: str, arm: str) -> ModelConfig:
    """The resolved ModelConfig of one arm at one shape (isoparametric depth solved)."""
    shape, grid = split_shape(spec)
    arms = grid_arms(grid)
    if arm not in arms:
        where = _FILE["path"] if _FILE is not None else f"conf/grid/{grid}.yaml"
        raise ShapeError(f"{where} has no arm {arm!r} for grid {grid} (arms: {', '.join(arms)})")
    if _FILE is not None:
        d = dict(_from_file("shapes", spec, f"shape {spec}").get(arm) or {})
        if not d:
            raise ShapeError(f"{_FILE['path']}: shape {spec} has no arm {arm!r}")
        return ModelConfig(**{**d, "lev": LevConfig(**d["lev"]),  # plain dataclasses: no
                              "factorized": FactorizedConfig(**d["factorized"])})  # OmegaConf
    path = conf_dir() / "model" / f"{shape}.yaml"
    if not path.is_file():
        raise ShapeError(f"{path}: no such config file")
    try:
        return copy.deepcopy(_composed(shape, tuple(arms[arm]), str(path)))
    except ShapeError as e:
        raise ShapeError(f"{spec} arm {arm}: {e}") from e


@functools.cache
def _composed(shape: str, overrides: tuple[str, ...], path: str) -> ModelConfig:
    """One composition per model config and arm overrides in a process (arm_config's)."""
    from leviathan.models.accounting import resolve_model_config

    cfg = _compose("train", [f"model={shape}", *overrides], f"model={shape}")
    return resolve_model_config(cfg.model)


def shapes_record(specs: list[str], grids: list[str] = ()) -> dict[str, Any]:
    """What a shapes file holds: every arm's resolved ModelConfig of each spec and of every
    shape of `grids` (their sizes too: bench gpu-grid), the grids' arms and the trainer options
    (composed with Hydra here)."""
    if _FILE is not None:
        raise ShapeError("bench shapes composes with Hydra: do not give it a shapes file")
    record: dict[str, Any] = {"format": FORMAT, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "conf": str(conf_dir()), "shapes": {}, "grids": {}, "trainer": {},
                              "grid_sizes": {}}
    wanted: dict[str, list[str] | None] = dict.fromkeys(specs)  # None: all the grid's arms
    for grid in grids:
        node = _grid(grid)
        record["grid_sizes"][grid] = {k: list(node.get(k) or []) for k in ("sizes", "dense_sizes")}
        for spec, arms in grid_specs(grid):
            wanted.setdefault(spec, arms)
    for spec, only in wanted.items():
        grid = split_shape(spec)[1]
        arms = only or record["grids"].setdefault(grid, grid_arms(grid))
        record["grids"].setdefault(grid, grid_arms(grid))
        record["shapes"][spec] = {arm: dataclasses.asdict(arm_config(spec, arm)) for arm in arms}
    for name in TRAINER_OPTIONS:
        record["trainer"][name] = conf_node("trainer", name)
    return record


def main(argv: list[str] | None = None) -> int:
    """`python -m leviathan.bench shapes`: write a shapes file for a machine without Hydra."""
    p = argparse.ArgumentParser(prog="python -m leviathan.bench shapes",
                                description=main.__doc__.split(":", 1)[1].strip())
    p.add_argument("--shapes", default="v1/421M,v2/1.2B",
                   help="comma-separated sizes, each optionally @<grid> (as bench gpu --shapes)")
    p.add_argument("--grids", default="",
                   help="comma-separated grids whose every shape to add (bench gpu-grid)")
    p.add_argument("--out", type=Path, required=True, help="the shapes file (JSON) to write")
    args = p.parse_args(argv)
    specs = [s.strip() for s in args.shapes.split(",") if s.strip()]
    record = shapes_record(specs, [g.strip() for g in args.grids.split(",") if g.strip()])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    n = sum(len(a) for a in record["shapes"].values())
    print(f"{args.out}: {n} arm configs of {', '.join(record['shapes'])}, trainer "
          f"{', '.join(TRAINER_OPTIONS)} (bench gpu --shapes-file {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
