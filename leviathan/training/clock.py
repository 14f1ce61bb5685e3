"""What a run costs, as it ran: wall seconds on its devices, training seconds, and the
steady-state seconds per optimizer step (summary.json's `cost`, read back by `python -m
leviathan.sweep.status` and by a plan that takes its costs from this run's sweep:
sweep.costs_from).

Steady state: every optimizer step after the first WARM of each attempt (compilation, the
allocator's and cuDNN's first passes), timed on the host between step boundaries with
validation and checkpoints left out; on CUDA the step callback synchronises the device at the
boundaries that open and close a timed stretch, so queued work is counted where it ran. The
totals of earlier attempts travel in the checkpoint: a resumed run adds up its attempts (up to
each one's last checkpoint: the steps an attempt took after it are trained, and counted, again).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


def warm_steps(max_steps: int) -> int:
    """Optimizer steps of each attempt left out of the steady state: a tenth, 1 to 10."""
    return max(1, min(10, max_steps // 10))


@dataclass
class Totals:
    """Seconds and steps of the attempts so far (what a checkpoint carries)."""

    attempts: int = 0
    wall_s: float = 0.0  # from the job's start of training (data, model, fit) to its end
    train_s: float = 0.0  # between step boundaries: no validation, no checkpoints
    steady_s: float = 0.0
    steady_steps: int = 0
    steps: int = 0  # optimizer steps timed


class RunClock:
    """The step callback's timer of one attempt, on top of the earlier attempts' Totals."""

    def __init__(self, max_steps: int, started: float | None = None) -> None:
        self.started = time.time() if started is None else started  # the attempt's start
        self.warm = warm_steps(max_steps)
        self.before = Totals()  # earlier attempts (restored from the checkpoint)
        self.now = Totals(attempts=1)  # this attempt, wall_s excepted
        self.device = "cpu"

    def step(self, seconds: float) -> None:
        """One optimizer step of this attempt took `seconds` of training."""
        self.now.steps += 1
        self.now.train_s += seconds
        if self.now.steps > self.warm:
            self.now.steady_s += seconds
            self.now.steady_steps += 1

    def opens_steady(self) -> bool:
        """Whether the step boundary about to be timed ends the warm-up (the device is
        synchronised there, as at every boundary that reads it)."""
        return self.now.steps + 1 == self.warm

    def totals(self, wall_s: float | None = None) -> Totals:
        """Every attempt's totals; this attempt's wall time up to now unless given."""
        wall = time.time() - self.started if wall_s is None else wall_s
        a, b = self.before, self.now
        return Totals(attempts=a.attempts + b.attempts, wall_s=a.wall_s + wall,
                      train_s=a.train_s + b.train_s, steady_s=a.steady_s + b.steady_s,
                      steady_steps=a.steady_steps + b.steady_steps, steps=a.steps + b.steps)

    def state(self) -> dict:
        return asdict(self.totals())

    def restore(self, state: dict | None) -> None:
        if state:
            self.before = Totals(**state)

    def summary(self, plan, wall_s: float, tc) -> dict:
        """summary.json's `cost`: device, attempts, wall and device seconds, the steady step
        and the settings it ran at (what a measurement of it must state)."""
        t = self.totals(wall_s)
        steady = t.steady_steps > 0
        step_s = (t.steady_s / t.steady_steps if steady else
                  t.train_s / t.steps if t.steps else None)
        per_device = plan.tokens_per_step / plan.world_size
        return {"device": self.device, "world_size": plan.world_size, "attempts": t.attempts,
                "wall_s": round(t.wall_s, 3), "device_s": round(t.wall_s * plan.world_size, 3),
                "train_s": round(t.train_s, 3), "steps_timed": t.steps,
                "steady_steps": t.steady_steps, "steady": steady,
                "step_s": step_s, "tokens_per_s": per_device / step_s if step_s else None,
                "accumulation": plan.accumulation, "micro_batch": plan.micro_batch,
                "seq_len": plan.seq_len, "compile": bool(tc.compile),
                "precision": str(tc.precision), "loss_impl": str(tc.loss_impl)}
