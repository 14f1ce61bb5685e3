"""The configuration, in one place: where conf/ is, the schemas, composing, typed groups.

- `conf_dir()`: the Hydra config folder. A source checkout uses the repository's `conf/`; an
  installed package ships the same files as `leviathan/conf/` (pyproject.toml maps them).
- `register_schemas()`: every group's dataclass goes into Hydra's ConfigStore as
  `<group>/schema` (launcher: `local_schema`, `slurm_schema`), which the YAML options list first
  in their defaults, so a composed config is typed and a bad key fails when it is composed.
- `compose(name, overrides)`: the primary config `train` or `sweep`, exactly as the
  `python -m leviathan.train|sweep` entry points see it (conf/local included). Every other
  entry point (status, fit-scaling, eval, dashboard, demo) composes through this function, so a
  site setting such as `tracking.uri` in conf/local/default.yaml holds everywhere.
- `to_config(cls, node, group, error)`: a validated dataclass instance from a composed node, a
  plain dict or an instance; unknown keys and wrong types are reported as `<group>.<key>`.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_REGISTERED = False


def conf_dir() -> Path:
    """The folder holding train.yaml, sweep.yaml and the groups."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "conf", here / "conf"):  # source checkout, installed package
        if (cand / "train.yaml").is_file():
            return cand
    raise FileNotFoundError(f"no Hydra config folder beside {here} (looked for conf/train.yaml "
                            "in the repository and in the installed package)")


def register_schemas() -> None:
    """Put every group's schema into Hydra's ConfigStore (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from hydra.core.config_store import ConfigStore

    from leviathan.data.config import DataConfig
    from leviathan.eval.config import EvalConfig
    from leviathan.models.config import LevConfig, ModelConfig
    from leviathan.sweep.grid import GridConfig
    from leviathan.sweep.launcher_config import LocalLauncherConfig, SlurmLauncherConfig
    from leviathan.training.config import PathsConfig, TrackingConfig, TrainerConfig

    cs = ConfigStore.instance()
    for group, name, node in (
            ("model", "schema", ModelConfig), ("model/lev", "schema", LevConfig),
            ("data", "schema", DataConfig), ("trainer", "schema", TrainerConfig),
            ("tracking", "schema", TrackingConfig), ("paths", "schema", PathsConfig),
            ("launcher", "local_schema", LocalLauncherConfig),
            ("launcher", "slurm_schema", SlurmLauncherConfig),
            ("grid", "schema", GridConfig), ("eval", "schema", EvalConfig)):
        cs.store(group=group, name=name, node=node)
    _REGISTERED = True


def compose(config_name: str = "train", overrides: list[str] | tuple[str, ...] = ()):
    """The composed primary config (DictConfig), as `python -m leviathan.<train|sweep>` sees
    it with these command-line overrides; works inside and outside an initialised Hydra."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name, overrides=list(overrides))
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        return hydra_compose(config_name, overrides=list(overrides))


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
