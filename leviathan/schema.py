"""Typed configs, the base layer: where conf/ is, and a validated dataclass from any node.

`to_config(cls, node, group, error)` turns a composed OmegaConf node, a plain dict or an
instance into a validated `cls` (the group's schema dataclass); unknown keys and wrong types
are reported as `<group>.<key>`. It imports nothing from the project, so every schema module
can use it; composing the configs (which imports the schemas) is leviathan.config.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def conf_dir() -> Path:
    """The folder holding train.yaml, sweep.yaml and the groups."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "conf", here / "conf"):  # source checkout, installed package
        if (cand / "train.yaml").is_file():
            return cand
    raise FileNotFoundError(f"no Hydra config folder beside {here} (looked for conf/train.yaml "
                            "in the repository and in the installed package)")


def to_config(cls: type[T], node: Any, group: str, error: type[Exception] = ValueError) -> T:
    """A validated `cls` (a dataclass) from an instance, a dict or an OmegaConf node.

    Interpolations are resolved against the node's own config first; the dataclass's
    __post_init__ then checks ranges and choices. Errors read `<group>.<key>: <what>`."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(node, cls):
        return dataclasses.replace(node)  # a copy, validated again
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if dataclasses.is_dataclass(node):
        node = dataclasses.asdict(node)
    if not isinstance(node, dict):
        raise error(f"{group}: expected a mapping, got {type(node).__name__}")
    node = _integral(cls, {k: v for k, v in node.items() if k != "_target_"})
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = f"{group}.{e.full_key}" if getattr(e, "full_key", None) else group
        msg = str(e).splitlines()[0]
        if "not in" in msg:
            obj = getattr(e, "object_type", None)
            known = ", ".join(f.name for f in dataclasses.fields(
                obj if dataclasses.is_dataclass(obj) else cls))
            msg = f"unknown key; allowed keys: {known}"
        raise error(f"{key}: {msg}") from None


def _integral(cls: type, d: dict) -> dict:
    """Whole floats for integer fields become ints (`trainer.tokens=1e9` on a command line)."""
    hints = typing.get_type_hints(cls)
    out = dict(d)
    for f in dataclasses.fields(cls):
        v, t = out.get(f.name), hints.get(f.name)
        kinds = (t, *typing.get_args(t))
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            out[f.name] = _integral(t, v)
        elif isinstance(v, float) and v.is_integer() and int in kinds and float not in kinds:
            out[f.name] = int(v)
    return out
