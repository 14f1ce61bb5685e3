"""Composing the configuration, in one place: the schemas and the primary configs.

- `register_schemas()`: every group's dataclass goes into Hydra's ConfigStore as
  `<group>/schema` (launcher: `local_schema`, `slurm_schema`), which the YAML options list first
  in their defaults, so a composed config is typed and a bad key fails when it is composed.
- `compose(name, overrides)`: the primary config `train` or `sweep`, exactly as the
  `python -m leviathan.train|sweep` entry points see it (conf/local included). Every other
  entry point (status, fit-scaling, eval, dashboard, demo) composes through this function, so a
  site setting such as `tracking.uri` in conf/local/default.yaml holds everywhere.
- `ladder_config(ladder, size)`: the ModelConfig of a named size, as composed.
The typed-config base (`conf_dir`: where conf/ is, in a checkout or the installed package;
`to_config`: a validated dataclass from a node) is leviathan.typed_config.
"""

from __future__ import annotations

from leviathan.typed_config import SITE_ENV, conf_dir, to_config

__all__ = ["compose", "conf_dir", "ladder_config", "register_schemas", "site_overrides",
           "to_config"]
_REGISTERED = False


def register_schemas() -> None:
    """Put every group's schema into Hydra's ConfigStore (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from hydra.core.config_store import ConfigStore

    from leviathan.data.config import DataConfig
    from leviathan.eval.config import EvalConfig
    from leviathan.models.config import LevConfig, ModelConfig
    from leviathan.paths import PathsConfig
    from leviathan.sweep.grid import GridConfig
    from leviathan.sweep.launcher_config import LocalLauncherConfig, SlurmLauncherConfig
    from leviathan.tracking.config import TrackingConfig
    from leviathan.training.config import TrainerConfig

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




def site_overrides() -> list[str]:
    """Hydra's search path gains $LEVIATHAN_SITE_CONF when set: a site's own config folder
    (local/default.yaml, or extra group options) for an installed package, whose conf/ lives in
    site-packages. Entry points add this to their command line."""
    import os

    site = os.environ.get(SITE_ENV)
    return [f"hydra.searchpath=[file://{os.path.abspath(site)}]"] if site else []


def compose(config_name: str = "train", overrides: list[str] | tuple[str, ...] = ()):
    """The composed primary config (DictConfig), as `python -m leviathan.<train|sweep>` sees
    it with these command-line overrides; works inside and outside an initialised Hydra."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    overrides = [*site_overrides(), *overrides]
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name, overrides=overrides)
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        return hydra_compose(config_name, overrides=overrides)


def ladder_config(ladder: str, size: str, **overrides):
    """The ModelConfig of a named size as conf/model/<ladder>/<size>.yaml composes it (Dense arm
    unless overridden), with keyword overrides of ModelConfig fields."""
    from leviathan.models.config import to_model_config

    return to_model_config(compose("train", [f"model={ladder}/{size}"]).model).replace(
        **overrides)


def override_key(override: str) -> str:
    """The key (or group) an override sets, as Hydra's own parser reads it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).key_or_group


def set_explicitly(cfg, overrides: list[str] | tuple[str, ...], key: str,
                   default: str) -> str | None:
    """The composed value of `key` when someone chose it: an override names it, a site's
    conf/local changed it from the schema's `default` (unresolved), or `default` reads an
    environment variable that is set. None when it is only the schema's default, so that a tool
    reading an existing sweep keeps what the sweep's runs were configured with."""
    import os
    import re

    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key)
    if value is None:
        return None
    parent, _, leaf = key.rpartition(".")
    raw = OmegaConf.to_container(OmegaConf.select(cfg, parent) if parent else cfg,
                                 resolve=False)[leaf]
    env = re.findall(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)", str(default))
    chosen = (any(override_key(o).lstrip("+~") == key for o in overrides) or raw != default
              or any(os.environ.get(v) for v in env))
    return str(value) if chosen else None
