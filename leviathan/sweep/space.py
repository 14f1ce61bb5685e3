"""The sweep's pre-flight check of the scratch folder: is there room for the checkpoints?

Every run keeps `trainer.keep_checkpoints` checkpoints (plus the one being written and its WSD-S
snapshots) in <paths.scratch_dir>/runs/<run>; a checkpoint is ~12 bytes per parameter (fp32
weights + AdamW's two moments, leviathan.training.plan.checkpoint_bytes). A job that finds the
disk full stops with exit status 74 (`disk full` in the sweep's status); this says so before
anything is launched.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or would: its nearest existing parent)."""
    path = Path(path).expanduser().resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def scratch_warning(plan: Any) -> str | None:
    """A warning when the scratch folder has less free space than the largest planned run's
    checkpoints need (None when there is room, or no run)."""
    from leviathan.training.config import trainer_config
    from leviathan.training.plan import checkpoint_bytes, checkpoint_space

    if not plan.runs:
        return None
    need = {r.run: checkpoint_space(trainer_config(r.config["trainer"]), r.params_total)
            for r in plan.runs}
    big = max(plan.runs, key=lambda r: need[r.run])
    scratch = Path(str(big.config["paths"]["scratch_dir"]))
    free = free_bytes(scratch)
    if free >= need[big.run]:
        return None
    tc = trainer_config(big.config["trainer"])
    return (f"warning: {scratch} has {free / 1e9:.2f} GB free; the largest run, {big.run} "
            f"({big.params_total:,} params), needs {need[big.run] / 1e9:.2f} GB for its "
            f"checkpoints ({checkpoint_bytes(big.params_total) / 1e9:.2f} GB each x "
            f"(trainer.keep_checkpoints={tc.keep_checkpoints} + 1 being written + "
            f"{len(tc.snapshot_steps)} snapshots)); the sweep's "
            f"{len(plan.runs)} runs keep {sum(need.values()) / 1e9:.2f} GB in all. A job that "
            "finds the disk full stops with exit status 74 (`disk full` in the status)")
