"""`python -m leviathan.train [overrides]`: one training run (what every sweep job executes).

The Hydra wrapper only composes conf/train.yaml and calls leviathan.training.run.train(cfg).
"""

from __future__ import annotations

from pathlib import Path

import hydra

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg) -> None:
    from leviathan.training.run import train

    train(cfg)


if __name__ == "__main__":
    main()
