"""The thin LightningModule around a Leviathan/Dense language model.

Its loss (trainer.loss_impl: the lean chunked head + loss by default), AdamW (param groups
from the model: one weight-decay rule by parameter role for every arm, leviathan/models/roles.py),
gradient clipping (done here so the pre-clip norm is logged) and the non-finite guard are the
plain torch pieces of step.py, which the benches run too; the learning-rate schedule is
schedule.py. Validation, logging and checkpoints live in callbacks.py.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from leviathan.training.batches import ResumableBatches
from leviathan.training.config import TrainerConfig
from leviathan.training.plan import RunPlan
from leviathan.training.schedule import build_scheduler
from leviathan.training.step import LossOf, NonFiniteLoss, clip_and_check, make_optimizer

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
        self._loss_sum = torch.zeros(())  # micro-batch losses since the last optimizer step
        self._loss_n = 0
        self.last: dict[str, float] = {}  # loss, grad_norm, lr of the last optimizer step

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V_pad)
        return self.model(idx)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.batches.consume(batch)
        loss = self.loss_of(batch)  # batch (B, T + 1): inputs [:, :-1], targets [:, 1:]
        self._loss_sum = self._loss_sum.to(loss.device) + loss.detach().float()
        self._loss_n += 1
        return loss

    def _all_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            t = t.clone()
            torch.distributed.all_reduce(t)
            t /= self.trainer.world_size
        return t

    def on_before_optimizer_step(self, optimizer) -> None:
        # Gradients are complete (accumulated, all-reduced by DDP): check, clip, record.
        loss = self._all_mean(self._loss_sum / max(1, self._loss_n)).item()
        step = self.trainer.global_step + 1
        self._loss_sum, self._loss_n = torch.zeros((), device=self.device), 0
        norm = clip_and_check(self.model, self.tc, loss, step)
        self.last = {"train/loss": loss, "grad_norm": norm,
                     "lr": optimizer.param_groups[0]["lr"]}

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
