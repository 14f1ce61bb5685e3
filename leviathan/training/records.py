"""What a training run records about itself: its git commit, MLflow params and tags, the MLflow
run it logs to (created, or reopened from the run folder), and how many windows the data
fingerprint hashes. Used by run.py (before the loop) and engine.py (inside it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from leviathan.redaction import redact
from leviathan.tracking.runs import KIND_TRAIN, Tag
from leviathan.training.config import flatten
from leviathan.training.context import RunContext

FINGERPRINT_WINDOWS = 64  # the data fingerprint hashes rank 0's first 64 windows


def git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def start_tracker(ctx: RunContext, *, fingerprint: str):
    """Create (or reopen: the run folder keeps its id) the run's MLflow run; rank 0 only. Never
    waits longer than tracking.connect_timeout_s for the server: leviathan.tracking.run_tracker
    opens the run in the background if it does not answer."""
    if not ctx.trk.enabled:  # tracking.enabled=false: the run folder only, no MLflow import
        from leviathan.tracking.folder import FolderTracker

        tracker = FolderTracker.for_run(ctx)
        tracker.start(tags=tags_of(ctx, fingerprint), params=params_of(ctx))
        return tracker
    from leviathan.tracking.run_tracker import RunTracker

    tracker = RunTracker.for_run(ctx)
    tracker.start(run_name=ctx.key, tags=tags_of(ctx, fingerprint), params=params_of(ctx),
                  parent_run_id=ctx.trk.parent_run_id, wait_s=ctx.trk.connect_timeout_s)
    return tracker


def params_of(ctx: RunContext) -> dict:
    """MLflow params: the resolved config flattened with dots (model with its solved depth),
    the derived plan, and the parameter counts; secrets masked (leviathan.redaction)."""
    c = dict(ctx.container)
    c["model"] = {**c["model"], **ctx.mcfg.as_dict()}
    params = {k: v for k, v in flatten(c).items()}
    params.update({f"plan.{k}": v for k, v in ctx.plan.as_dict().items() if k != "n_params"})
    params.update({f"n_params/{k}": v for k, v in ctx.plan.n_params.items()})
    return redact(params)


def tags_of(ctx: RunContext, fingerprint: str) -> dict:
    """The training run's MLflow tags (names: leviathan.tracking.runs.Tag)."""
    cfg = ctx.cfg
    meta = cfg.get("meta") or {}
    return redact({Tag.KIND: KIND_TRAIN, Tag.SWEEP: meta.get("sweep"), Tag.PAIR: meta.get("pair"),
            Tag.ARM: meta.get("arm") or cfg.model.arm,
            Tag.SIZE: meta.get("size") or cfg.model.size, Tag.FAMILY: meta.get("family"),
            Tag.SEED: cfg.get("seed"), Tag.LR: cfg.trainer.lr, Tag.SCHEDULE: cfg.trainer.schedule,
            Tag.COOLDOWN: meta.get("cooldown"), Tag.BRANCH_OF: meta.get("branch_of"),
            Tag.CONFIG_HASH: ctx.chash, Tag.DATA_FINGERPRINT: fingerprint,
            Tag.GIT_COMMIT: git_commit(), Tag.RUN_KEY: ctx.key})
