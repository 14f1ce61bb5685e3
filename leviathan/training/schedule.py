"""Learning-rate schedules: linear warm-up, then cosine decay, warmup-stable-decay, or constant.

- `cosine`: cosine decay from lr to min_lr over the steps after warm-up (the paper's setting).
- `wsd`: warm-up, a constant stable phase, then a cooldown to min_lr over the last
  `cooldown_fraction` of the steps, `linear` or `1-sqrt` shaped (Hägele et al. 2024; MiniCPM).
- `constant`: warm-up, then lr to the end: the main run of WSD-S, whose cooldown branches each
  start from one of its checkpoints (a branch's stable phase is the main run's constant LR, so
  the branch continues it exactly and only adds its decay).
Steps count optimizer steps from 0; the LR used by step s (1-based, as logged) is lr_at(s - 1).
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "wsd", "constant")
COOLDOWN_SHAPES = ("linear", "1-sqrt")


def cooldown_steps(total_steps: int, fraction: float) -> int:
    """Steps of a WSD cooldown: the last `fraction` of the run, at least one."""
    return max(1, round(fraction * total_steps)) if fraction > 0 else 0


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int,
          schedule: str = "cosine", cooldown_fraction: float = 0.2,
          cooldown_shape: str = "linear") -> float:
    """Learning rate for 0-based optimizer step `step`."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "wsd":
        cool = cooldown_steps(total_steps, cooldown_fraction)
        start = total_steps - cool  # first decaying step
        if step < start:
            return lr
        progress = min(1.0, (step - start + 1) / cool)
        factor = 1.0 - progress if cooldown_shape == "linear" else 1.0 - math.sqrt(progress)
        return min_lr + (lr - min_lr) * factor
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def lr_lambda(*, lr: float, **kw):
    """A LambdaLR multiplier (relative to `lr`) implementing `lr_at`; only the scheduler's
    `last_epoch` is checkpointed, so a resumed (or branched) run rebuilds it from its config."""

    def factor(step: int) -> float:
        return lr_at(step, lr=lr, **kw) / lr

    return factor


def build_scheduler(optimizer, *, lr: float, **kw):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(lr=lr, **kw))
