"""What one sweep job executes: `train(cfg)` on the run's resolved config.

Kept tiny and importable on the compute node: the submitted callable is
`ResumableCall(run_job, config_dict)`, so a requeued job calls it again with the same config and
training resumes from the checkpoint in the run's scratch folder.
"""

from __future__ import annotations

import logging
from typing import Any


def run_job(run_config: dict[str, Any], branches: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """Train the run, then its WSD-S cooldown branches (each starts from one of the run's
    snapshots); a requeued job skips what is finished and resumes the rest. A checkpoint that
    finds the disk full ends the job with exit status 74."""
    from omegaconf import OmegaConf

    from leviathan.logs import setup_logging
    from leviathan.training.run import train

    setup_logging()  # the job's log: what `python -m leviathan.train` prints

    from leviathan.errors import LeviathanError
    from leviathan.training.checkpoints import CheckpointDiskFull

    try:
        summary = train(OmegaConf.create(run_config))
        if branches:
            summary = {**summary, "branches": [train(OmegaConf.create(b)) for b in branches]}
    except CheckpointDiskFull as e:  # the job's exit status says it (74), the log says where
        logging.getLogger(__name__).error(f"error: {e}")
        raise SystemExit(e.exit_code) from e
    except LeviathanError as e:  # one line in the job's log; submitit records the failure
        logging.getLogger(__name__).error(f"error: {e}")
        raise
    return summary


def eval_job(run_dir: str, eval_config: dict[str, Any]) -> dict[str, Any]:
    """The sweep's eval step for one run: lm-evaluation-harness on its last checkpoint.

    Idempotent (results for the same spec and checkpoint are reused); a task whose data is
    missing is reported in the result's `missing`, not raised."""
    from leviathan.eval import evaluate_run
    from leviathan.logs import setup_logging

    setup_logging()

    return evaluate_run(run_dir, eval_config)
