"""`python -m leviathan.train [overrides]`: one training run (what every sweep job executes).

The Hydra wrapper only composes conf/train.yaml (schemas registered, conf/local included) and
calls leviathan.training.run.train(cfg); tests call `train` directly.
"""

from __future__ import annotations

import logging
import sys

import hydra

from leviathan.config import conf_dir, register_schemas, site_overrides

register_schemas()
log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg) -> None:
    from leviathan.errors import LeviathanError
    from leviathan.logs import setup_logging
    from leviathan.training.run import train

    setup_logging()  # in place of Hydra's console handler: plain messages, rank 0
    try:
        train(cfg)
    except LeviathanError as e:  # what the user can fix; anything else shows its traceback
        log.error(f"error: {e}")
        sys.exit(getattr(e, "exit_code", 2))  # CheckpointDiskFull: 74


if __name__ == "__main__":
    sys.argv[1:1] = site_overrides()  # $LEVIATHAN_SITE_CONF joins Hydra's search path
    main()
