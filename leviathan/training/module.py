"""The thin LightningModule around a Leviathan/Dense language model.

Its loss (trainer.loss_impl: the lean chunked head + loss by default), AdamW (param groups
from the model: one weight-decay rule by parameter role for every arm, leviathan/models/roles.py),
gradient clipping (done here so the pre-clip norm is logged) and the non-finite guard are the
plain torch pieces of step.py, which the benches run too; the learning-rate schedule is
schedule.py. Validation, logging and checkpoints live in callbacks.py.

No host synchronisation per step: each optimizer step's loss and pre-clip gradient norm stay
on the device in `pending` until the callback reads them all at once (`flush`, at log,
validation and checkpoint steps); the non-finite guard runs there, naming the first bad step,
and always before a checkpoint is written, so a checkpoint never holds a diverged step.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from leviathan.training.batches import ResumableBatches
from leviathan.training.config import TrainerConfig
from leviathan.training.plan import RunPlan
from leviathan.training.schedule import build_scheduler
from leviathan.training.step import LossOf, NonFiniteLoss, check_finite, clip_grads, make_optimizer

__all__ = ["LanguageModelModule", "NonFiniteLoss"]


class LanguageModelModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, tc: TrainerConfig, plan: RunPlan,
                 batches: ResumableBatches) -> None:
        super().__init__()
        self.model = model
        self.tc, self.plan, self.batches = tc, plan, batches
        # the loss holds the (compiled) network outside the module tree: state_dict keys stay
        # model.*; trainer.loss_impl picks the lean (chunked) or the plain head + loss
        self.loss_of = LossOf(model, tc)
        self._loss_sum: torch.Tensor | None = None  # micro-batch losses since the last step
        self._loss_n = 0
        self.pending: list[tuple[int, torch.Tensor, float]] = []  # (step, [loss, norm], lr)
        self._last: dict[str, float] = {}  # loss, grad_norm, lr of the last flushed step

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V_pad)
        return self.model(idx)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.batches.consume(batch)
        loss = self.loss_of(batch)  # batch (B, T + 1): inputs [:, :-1], targets [:, 1:]
        part = loss.detach().float()
        self._loss_sum = part if self._loss_sum is None else self._loss_sum + part
        self._loss_n += 1
        return loss

    def _all_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            t = t.clone()
            torch.distributed.all_reduce(t)
            t /= self.trainer.world_size
        return t

    def on_before_optimizer_step(self, optimizer) -> None:
        # Gradients are complete (accumulated, all-reduced by DDP): clip, record on the device.
        loss = self._all_mean(self._loss_sum / self._loss_n)
        self._loss_sum, self._loss_n = None, 0
        norm = clip_grads(self.model, self.tc)
        self.pending.append((self.trainer.global_step + 1, torch.stack([loss, norm.float()]),
                             optimizer.param_groups[0]["lr"]))

    @property
    def last(self) -> dict[str, float]:
        """train/loss, grad_norm and lr of the latest optimizer step. Reading it waits for the
        device when that step is not flushed yet (it does not consume pending steps)."""
        if self.pending:
            _, values, lr = self.pending[-1]
            loss, norm = values.tolist()
            return {"train/loss": loss, "grad_norm": norm, "lr": lr}
        return dict(self._last)

    def flush(self) -> list[tuple[int, dict[str, float]]]:
        """The steps recorded since the last flush as (step, {train/loss, grad_norm, lr}), read
        from the device in one transfer; raises NonFiniteLoss at the first non-finite one."""
        if not self.pending:
            return []
        values = torch.stack([v for _, v, _ in self.pending]).tolist()  # the one sync
        out = []
        for (step, _, lr), (loss, norm) in zip(self.pending, values, strict=True):
            check_finite(self.tc, loss, norm, step)
            out.append((step, {"train/loss": loss, "grad_norm": norm, "lr": lr}))
        self.pending.clear()
        self._last = dict(out[-1][1])
        return out

    def on_train_start(self) -> None:
        # The restored optimizer holds the LR of the run it came from; a WSD-S branch starting
        # from its main run's snapshot must use its own schedule from its first step on.
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            for group, base, fn in zip(sched.optimizer.param_groups, sched.base_lrs,
                                       sched.lr_lambdas, strict=True):
                group["lr"] = base * fn(sched.last_epoch)

    def configure_optimizers(self):
        opt = make_optimizer(self.model, self.tc)
        sched = build_scheduler(opt, lr=self.tc.lr, min_lr=self.tc.min_lr,
                                warmup_steps=self.plan.warmup_steps,
                                total_steps=self.plan.max_steps, schedule=self.tc.schedule,
                                cooldown_fraction=self.tc.cooldown_fraction,
                                cooldown_shape=self.tc.cooldown_shape)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
