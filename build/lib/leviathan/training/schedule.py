"""Learning-rate schedule: linear warm-up, then cosine decay to min_lr at the last step.

Steps count optimizer steps from 0; the LR used by step s (1-based, as logged) is lr_at(s - 1).
"""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for 0-based optimizer step `step`."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def lr_lambda(*, lr: float, min_lr: float, warmup_steps: int, total_steps: int):
    """A LambdaLR multiplier (relative to `lr`) implementing `lr_at`; picklable-free closures are
    fine because only the scheduler's `last_epoch` is checkpointed."""

    def factor(step: int) -> float:
        return lr_at(step, lr=lr, min_lr=min_lr, warmup_steps=warmup_steps,
                     total_steps=total_steps) / lr

    return factor


def build_scheduler(optimizer, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(lr=lr, min_lr=min_lr, warmup_steps=warmup_steps,
                             total_steps=total_steps))
