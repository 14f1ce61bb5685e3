"""Typed configs, the base layer: where conf/ is, a validated dataclass from any node, and the
declarative per-field checks every schema uses.

`to_config(cls, node, group, error)` turns a composed OmegaConf node, a plain dict or an
instance into a validated `cls` (the group's schema dataclass); unknown keys and wrong types
are reported as `<group>.<key>`. A schema lists its range and choice checks in a class-level
`_checks = {field: check}` (`positive()`, `at_least(lo)`, `above(lo)`, `in_range(lo, hi)`,
`choice(*values)`, `boolean()`, `text()`, `each(check)`, `optional(check)`); its __post_init__ calls
`check_fields(self, group, error)`, which raises `error("<group>.<field>: must be ..., got v")`;
only cross-field rules stay hand-written. It imports nothing from the project, so every schema
module can use it; composing the configs (which imports the schemas) is leviathan.config.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Check = Callable[[Any], "str | None"]  # None if the value passes, else "must be ..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def at_least(lo: int) -> Check:
    """An integer >= lo (bools and non-integers rejected)."""
    def check(v: Any) -> str | None:
        return None if _is_int(v) and v >= lo else f"must be an integer >= {lo}"
    return check


def positive() -> Check:
    """An integer >= 1: sizes, counts, steps."""
    return at_least(1)


def in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
             hi_open: bool = False) -> Check:
    """A number (int or float, not bool) within [lo, hi] (open ends as asked; None: unbounded)."""
    if hi is None:
        what = f"must be a number {'>' if lo_open else '>='} {lo}"
    elif lo is None:
        what = f"must be a number {'<' if hi_open else '<='} {hi}"
    else:
        what = f"must be a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def check(v: Any) -> str | None:
        if not _is_number(v):
            return what
        if lo is not None and (v <= lo if lo_open else v < lo):
            return what
        if hi is not None and (v >= hi if hi_open else v > hi):
            return what
        return None
    return check


def above(lo: float) -> Check:
    """A number > lo (rates, timeouts, epsilons)."""
    return in_range(lo, lo_open=True)


def boolean() -> Check:
    """true or false (not 0/1, not a string)."""
    def check(v: Any) -> str | None:
        return None if isinstance(v, bool) else "must be true or false"
    return check


def text() -> Check:
    """A non-empty string."""
    def check(v: Any) -> str | None:
        return None if isinstance(v, str) and v.strip() else "must be a non-empty string"
    return check


def choice(*values: Any) -> Check:
    """One of the values listed."""
    def check(v: Any) -> str | None:
        return None if v in values else f"must be one of {', '.join(map(str, values))}"
    return check


def each(inner: Check) -> Check:
    """A list whose every item `inner` accepts."""
    def check(v: Any) -> str | None:
        bad = not isinstance(v, list | tuple) or any(inner(x) is not None for x in v)
        what = (inner(None) or "").removeprefix("must be ")
        return f"must be a list, each item {what}" if bad else None
    return check


def optional(inner: Check) -> Check:
    """null, or what `inner` accepts."""
    def check(v: Any) -> str | None:
        what = None if v is None else inner(v)
        return None if what is None else f"must be null or {what.removeprefix('must be ')}"
    return check


def field_checks(cls: type) -> dict[str, Check]:
    """{field: check} of a schema: its class-level `_checks` (nearest class first)."""
    out: dict[str, Check] = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get("_checks", {}))
    return out


def check_fields(obj: Any, group: str, error: type[Exception] = ValueError) -> None:
    """Apply the schema's per-field checks; the first failure raises
    `error("<group>.<field>: must be ..., got <value>")`."""
    for name, what in field_problems(obj):
        raise error(f"{group}.{name}: {what}, got {getattr(obj, name)!r}")


def field_problems(obj: Any) -> list[tuple[str, str]]:
    """Every (field, "must be ...") the schema's per-field checks find in `obj`, in order."""
    out = []
    for name, check in field_checks(type(obj)).items():
        what = check(getattr(obj, name))
        if what is not None:
            out.append((name, what))
    return out


SITE_ENV = "LEVIATHAN_SITE_CONF"  # a folder whose local/default.yaml applies like conf/local


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
    if isinstance(node, cls):  # before importing OmegaConf: torch-alone tools (`bench gpu`)
        return dataclasses.replace(node)  # a copy, validated again
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

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
