"""`python -m leviathan.sweep +grid=<name> [sweep.dry_run=true] [overrides]`: the Hydra wrapper of
the sweep command (leviathan/cli/sweep.py, where the sweep meets the analysis); it only composes
the config and calls it."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from leviathan.cli.sweep import run
from leviathan.config import conf_dir, register_schemas, site_overrides

register_schemas()


@hydra.main(config_path=str(conf_dir()), config_name="sweep", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from leviathan.logs import setup_logging

    setup_logging()  # in place of Hydra's console handler: plain messages
    code = run(cfg, list(HydraConfig.get().overrides.task))
    if code:
        sys.exit(code)


if __name__ == "__main__":
    sys.argv[1:1] = site_overrides()  # $LEVIATHAN_SITE_CONF joins Hydra's search path
    main()
