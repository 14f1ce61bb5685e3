"""What happens at every optimizer-step boundary: metrics, throughput/MFU, validation,
atomic checkpoints, and preemption.

All of it runs in `on_train_batch_end` right after an optimizer step, the one point where the
model, optimizer, scheduler, data position and RNG agree. Checkpoints go to <run dir>/last.ckpt
through the trainer's InPlaceCheckpointIO (training/checkpoints.py: a temporary file beside it,
fsynced and renamed, the previous ones kept with their checksums), so a kill at any moment
leaves the previous one intact. The run's extra state (per-rank data position and RNG) travels
in the callback's state_dict inside the Lightning checkpoint.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from leviathan.tracking.runs import CKPT
from leviathan.training.checkpoints import CheckpointDiskFull, CheckpointStore
from leviathan.training.clock import RunClock
from leviathan.training.context import RunContext
from leviathan.training.evaluation import FreqBuckets, evaluate
from leviathan.training.signals import PreemptionFlag, rehearsal_step

log = logging.getLogger(__name__)

def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather(obj: Any, world_size: int) -> list[Any]:
    if world_size > 1 and torch.distributed.is_initialized():
        out: list[Any] = [None] * world_size
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


class StepCallback(pl.Callback):
    """Per-step bookkeeping; `tracker` is the RunTracker on global rank 0, None elsewhere."""

    def __init__(self, *, run_dir: Path, plan, tc, tracker=None, val_batches=(),
                 buckets: FreqBuckets | None = None,
                 preemption: PreemptionFlag | None = None, started: float | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.plan, self.tc, self.tracker = plan, tc, tracker
        self.val_batches = list(val_batches)
        self.buckets = buckets
        self.preemption = preemption
        self.final: dict[str, float] = {}  # last validation numbers
        self.throughput: dict[str, float] = {}  # last tokens_per_s / flops_per_s / mfu
        self.preempted_at: int | None = None
        self.last_ckpt_step: int | None = None
        self._seen_step = -1
        self._restored: dict | None = None
        self._window_t = 0.0  # training seconds in the current throughput window
        self._window_steps = 0
        self._t_last: float | None = None
        self.clock = RunClock(plan.max_steps, started)  # what the run costs (summary's `cost`)
        self._cuda = False
        self._rehearse_at = rehearsal_step(self.run_dir.name)  # a preemption rehearsal (signals.py)

    @classmethod
    def for_run(cls, ctx: RunContext, **kw: Any) -> StepCallback:
        """The callback of a training run (its folder, plan and trainer config from `ctx`);
        `kw`: tracker, val_batches, buckets, preemption, started (the attempt's time.time())."""
        return cls(run_dir=ctx.run_dir, plan=ctx.plan, tc=ctx.tc, **kw)

    # --------------------------------------------------------------- state in the checkpoint
    def state_dict(self) -> dict:
        return dict(self._gathered) if getattr(self, "_gathered", None) else {}

    def setup(self, trainer, pl_module, stage) -> None:
        self._module = pl_module  # needed by load_state_dict, which Lightning calls bare

    def load_state_dict(self, state: dict) -> None:
        # Called while restoring, before Lightning first iterates (and prefetches) the data.
        if not state:
            return
        r = self._module.global_rank
        if len(state["data"]) != self._module.trainer.world_size:
            from leviathan.training.config import TrainConfigError

            raise TrainConfigError(
                f"trainer.devices x trainer.num_nodes: the checkpoint holds the data position of "
                f"{len(state['data'])} rank(s), this run has {self._module.trainer.world_size}: "
                "resume with the layout that wrote it")
        self._module.batches.load_data_state(state["data"][r])
        self.clock.restore(state.get("cost"))  # the earlier attempts' seconds
        self._restored = state
        self._rehearse_at = None  # a resumed attempt never rehearses

    def on_train_start(self, trainer, pl_module) -> None:
        if self.preemption is not None:
            self.preemption.reinstall()  # Lightning put its own SIGTERM handler in at fit start
        self._seen_step = trainer.global_step
        if self._restored:
            set_rng_state(self._restored["rng"][trainer.global_rank])
            self.final = dict(self._restored.get("final", {}))
            self._restored = None
        self._cuda = pl_module.device.type == "cuda"
        self.clock.device = (torch.cuda.get_device_name(pl_module.device) if self._cuda
                             else pl_module.device.type)
        self._t_last = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._t_last is None:
            self._t_last = time.perf_counter()

    # --------------------------------------------------------------- the step boundary
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._seen_step:
            return  # inside gradient accumulation
        self._seen_step = step
        last_step = step >= self.plan.max_steps
        shown = step % self.tc.log_every == 0 or last_step
        validate = step % self.tc.val_every == 0 or last_step
        if self._cuda and (shown or validate or step % self.tc.ckpt_every == 0
                           or self.clock.opens_steady()):
            torch.cuda.synchronize()  # read anyway: the queued work is timed as training
        now = time.perf_counter()
        self._window_t += now - (self._t_last or now)
        self._window_steps += 1
        self.clock.step(now - (self._t_last or now))
        if step == self._rehearse_at and self.preemption is not None:
            self.flush(pl_module, shown)
            self.preemption.wait_for_preemption(step)
        signum = self._agreed_signal(trainer, pl_module)
        snapshot = step in self.tc.snapshot_steps
        save = step % self.tc.ckpt_every == 0 or last_step or signum or snapshot
        if shown or validate or save:  # the only steps that read the device (module.flush)
            self.flush(pl_module, shown)
        if validate:
            self.validate(trainer, pl_module, step)
        if save:
            self.save(trainer, pl_module)
        if snapshot and trainer.is_global_zero:
            self.keep_snapshot(step)
        if signum and not last_step:
            self.preempted_at = step
            trainer.should_stop = True
        self._t_last = time.perf_counter()  # validation and checkpoint time are not training

    def flush(self, pl_module, shown: bool) -> None:
        """Read the steps the module kept on the device (raising NonFiniteLoss at the first
        diverged one), log each at its own step, and print a progress line if `shown`."""
        steps = pl_module.flush()
        for i, (step, metrics) in enumerate(steps):
            metrics["tokens_seen"] = float(step * self.plan.tokens_per_step)
            if shown and i == len(steps) - 1:
                self._throughput(metrics)
            if self.tracker is not None:
                self.tracker.log_metrics(metrics, step=step)
        if shown and steps:  # after log_metrics: a printed step's metrics are in the outbox
            self._progress(*steps[-1])

    def _throughput(self, metrics: dict) -> None:
        if self._window_t <= 0:
            return
        tps = self._window_steps * self.plan.tokens_per_step / self._window_t
        flops = tps * self.plan.flops_per_token
        self.throughput = {"tokens_per_s": tps, "flops_per_s": flops}
        if self.tc.peak_flops:
            self.throughput["mfu"] = flops / (self.tc.peak_flops * self.plan.world_size)
        metrics.update(self.throughput)
        self._window_t, self._window_steps = 0.0, 0

    def _progress(self, step: int, m: dict) -> None:
        if self.tracker is None:
            return
        extra = f" mfu {m['mfu']:.3f}" if "mfu" in m else ""
        tps = f" tok/s {m['tokens_per_s']:.0f}" if "tokens_per_s" in m else ""
        log.info(f"step {step}/{self.plan.max_steps} loss {m.get('train/loss', float('nan')):.4f}"
                 f" lr {m.get('lr', 0):.3e} grad_norm {m.get('grad_norm', 0):.3f}{tps}{extra}")

    def validate(self, trainer, pl_module, step: int) -> None:
        if not self.val_batches:
            return
        batches = self.val_batches[: self.tc.val_batches or None]
        dtype = torch.bfloat16 if "bf16" in str(self.tc.precision) else (
            torch.float16 if str(self.tc.precision).startswith("16") else None)
        out = evaluate(pl_module.model, batches, device=pl_module.device, buckets=self.buckets,
                       rank=trainer.global_rank, world_size=trainer.world_size,
                       autocast_dtype=dtype)
        self.final = {"val/loss": out["val/loss"], "step": step,
                      "tokens": float(step * self.plan.tokens_per_step),
                      "tokens_evaluated": out.pop("val/tokens_evaluated"),
                      "buckets": {k.rsplit("/", 1)[1]: v for k, v in out.items()
                                  if k.startswith("val/loss_freq/")}}
        out["val/tokens"] = self.final["tokens"]
        if self.tracker is not None:
            self.tracker.log_metrics(out, step=step)
            log.info(f"step {step}/{self.plan.max_steps} val/loss {out['val/loss']:.4f}")

    def _agreed_signal(self, trainer, pl_module) -> int:
        local = self.preemption.received if self.preemption is not None else None
        if trainer.world_size == 1:
            return int(local or 0)  # nothing to agree on: no device round trip
        flag = torch.tensor([local or 0], device=pl_module.device)
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    # --------------------------------------------------------------- checkpoints
    def keep_snapshot(self, step: int) -> Path:
        """Keep the checkpoint just written as step_<s>.ckpt (a hard link where possible)."""
        return CheckpointStore(self.run_dir, self.tc.keep_checkpoints).keep_snapshot(step)

    def save(self, trainer, pl_module) -> Path:
        """Write <run dir>/last.ckpt (all ranks call; rank 0 writes, through the trainer's
        InPlaceCheckpointIO: in place, checksummed, the previous ones kept). A full disk on
        rank 0 raises CheckpointDiskFull on every rank."""
        if self.tracker is not None:
            self.tracker.sync()  # the metrics of every step this checkpoint covers are on disk
        mine = {"data": pl_module.batches.data_state(), "rng": rng_state()}
        gathered = _gather(mine, trainer.world_size)
        self._gathered = {"data": [g["data"] for g in gathered],
                          "rng": [g["rng"] for g in gathered], "final": self.final,
                          "cost": self.clock.state()}
        final = self.run_dir / CKPT
        full: CheckpointDiskFull | None = None
        try:
            trainer.save_checkpoint(final)
        except CheckpointDiskFull as e:
            full = e
            if trainer.world_size > 1:  # the barrier Lightning's save skipped on this rank
                trainer.strategy.barrier("Trainer.save_checkpoint")
        finally:
            self._gathered = None
        if self._any_rank(trainer, pl_module, full is not None):
            raise full or CheckpointDiskFull(f"rank 0 could not write {final}: disk full")
        self.last_ckpt_step = trainer.global_step
        return final

    @staticmethod
    def _any_rank(trainer, pl_module, flag: bool) -> bool:
        """Whether `flag` holds on any rank (a barrier as well)."""
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return flag
        t = torch.tensor([int(flag)], device=pl_module.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())
