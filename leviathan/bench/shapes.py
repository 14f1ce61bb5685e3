"""Model configs of a named size and a grid's arms (and trainer options), read from conf/
without Hydra.

`bench gpu` must run on a GPU box that has torch and this package but maybe not Hydra or
OmegaConf, so it reads the same YAML files Hydra composes, in the one pattern they use: an
option file (conf/<group>/<name>.yaml, whose defaults list names the group's `schema`, i.e. the
dataclass defaults, or other options of the same group) over those, then for a model the
`model.*` overrides of one arm of a grid (conf/grid/<grid>.yaml `arms`).
tests/unit/test_bench_gpu.py checks the result against Hydra's own composition.

    "v1/421M"            -> the isoparametric grid's arms (the v1 family)
    "v2/1.2B"            -> the decoupled grid's arms (the v2 family)
    "debug@isobody"      -> any size with any grid's arms
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from leviathan.errors import LeviathanError
from leviathan.models.accounting import resolve_model_config
from leviathan.models.config import LevConfig, ModelConfig
from leviathan.training.config import TrainerConfig
from leviathan.typed_config import conf_dir

GRID_OF_LADDER = {"v1": "isoparametric", "v2": "decoupled", "smoke": "smoke"}
SCHEMAS = {"model": ModelConfig, "trainer": TrainerConfig}  # leviathan.config.register_schemas


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats such as 989.0e12 are floats (as OmegaConf reads them), not strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


class ShapeError(LeviathanError, ValueError):
    """A shape or grid name that conf/ does not have; the message names the file."""


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ShapeError(f"{path}: no such config file")
    return load_yaml(path.read_text()) or {}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (what OmegaConf.to_container gives)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def schema_defaults(group: str) -> dict[str, Any]:
    """The `<group>/schema` node: the group's dataclass with every default."""
    if group not in SCHEMAS:
        raise ShapeError(f"conf/{group}: bench gpu reads only the groups {', '.join(SCHEMAS)}")
    return _plain(dataclasses.asdict(SCHEMAS[group]()))


def conf_node(group: str, name: str) -> dict[str, Any]:
    """conf/<group>/<name>.yaml over its defaults (the group's schema or other options of the
    same group, listed before _self_), as Hydra composes it."""
    node = _read(conf_dir() / group / f"{name}.yaml")
    out: dict[str, Any] = {}
    for entry in node.pop("defaults", []):
        if entry == "_self_":
            continue
        parent = str(entry).split("@", 1)[0].removeprefix(f"/{group}/")
        out = _merge(out, schema_defaults(group) if parent == "schema"
                     else conf_node(group, parent))
    return _merge(out, node)


def split_shape(spec: str) -> tuple[str, str]:
    """'v1/421M' -> ('v1/421M', 'isoparametric'); 'debug@isobody' -> ('debug', 'isobody')."""
    shape, _, grid = spec.partition("@")
    if not grid:
        ladder = shape.split("/", 1)[0] if "/" in shape else shape
        if ladder not in GRID_OF_LADDER:
            raise ShapeError(f"{spec}: name the grid whose arms to use, e.g. {shape}@isobody")
        grid = GRID_OF_LADDER[ladder]
    return shape, grid


def grid_arms(grid: str) -> dict[str, list[str]]:
    """The arms of conf/grid/<grid>.yaml: arm name -> its overrides."""
    arms = _read(conf_dir() / "grid" / f"{grid}.yaml").get("arms")
    if not isinstance(arms, dict) or not arms:
        raise ShapeError(f"{conf_dir() / 'grid' / f'{grid}.yaml'}: no `arms` mapping")
    return arms


def arm_config(spec: str, arm: str) -> ModelConfig:
    """The resolved ModelConfig of one arm at one shape (isoparametric depth solved)."""
    shape, grid = split_shape(spec)
    arms = grid_arms(grid)
    if arm not in arms:
        raise ShapeError(f"conf/grid/{grid}.yaml has no arm {arm!r} (arms: {', '.join(arms)})")
    node = conf_node("model", shape)
    for override in arms[arm]:
        key, sep, value = str(override).partition("=")
        parts = key.lstrip("+").split(".")
        if not sep or parts[0] != "model":
            raise ShapeError(f"conf/grid/{grid}.yaml arms.{arm}: {override!r} is not a model.* "
                             "override (bench gpu reads only those)")
        target = node
        for p in parts[1:-1]:
            target = target.setdefault(p, {})
        target[parts[-1]] = load_yaml(value)
    lev = LevConfig(**node.pop("lev", {}))
    return resolve_model_config(ModelConfig(**node, lev=lev))  # plain dataclasses: no OmegaConf
