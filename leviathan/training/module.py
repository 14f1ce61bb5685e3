"""The thin LightningModule around a Leviathan/Dense language model.

It owns the loss, AdamW (param groups from the model: one weight-decay rule by parameter
role for every arm, leviathan/models/roles.py), the learning-rate schedule (schedule.py),
gradient clipping (done here so the pre-clip norm is logged) and the non-finite guard.
Validation, logging and checkpoints live in callbacks.py.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from leviathan.training.batches import ResumableBatches
from leviathan.training.config import RunPlan, TrainerConfig
from leviathan.training.schedule import build_scheduler


class NonFiniteLoss(FloatingPointError):
    """The training loss (or gradient norm) became NaN or infinite."""


class LanguageModelModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, tc: TrainerConfig, plan: RunPlan,
                 batches: ResumableBatches) -> None:
        super().__init__()
        self.model = model
        self.tc, self.plan, self.batches = tc, plan, batches
        # the (compiled) forward is kept outside the module tree: state_dict keys stay model.*
        object.__setattr__(self, "_forward", torch.compile(model) if tc.compile else model)
        self._loss_sum = torch.zeros(())  # micro-batch losses since the last optimizer step
        self._loss_n = 0
        self.last: dict[str, float] = {}  # loss, grad_norm, lr of the last optimizer step

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V_pad)
        return self._forward(idx)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.batches.consume(batch)
        x, y = batch[:, :-1], batch[:, 1:]  # (B, T), (B, T)
        logits = self(x)  # (B, T, V_pad)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
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
        max_norm = self.tc.grad_clip if self.tc.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item()
        if not math.isfinite(loss) or not math.isfinite(norm):
            what = f"train/loss={loss}" if not math.isfinite(loss) else f"grad_norm={norm}"
            raise NonFiniteLoss(
                f"non-finite {what} at step {step}: stopping. The last good checkpoint (if any) is "
                f"kept; lower trainer.lr (now {self.tc.lr}) or check the data.")
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
        groups = self.model.optim_groups(self.tc.weight_decay)
        groups = [{k: v for k, v in g.items() if k != "name"} for g in groups]
        fused = self.tc.accelerator in ("gpu", "cuda") and torch.cuda.is_available()
        opt = torch.optim.AdamW(groups, lr=self.tc.lr, betas=tuple(self.tc.betas),
                                eps=self.tc.eps, fused=fused or None)
        sched = build_scheduler(opt, lr=self.tc.lr, min_lr=self.tc.min_lr,
                                warmup_steps=self.plan.warmup_steps,
                                total_steps=self.plan.max_steps, schedule=self.tc.schedule,
                                cooldown_fraction=self.tc.cooldown_fraction,
                                cooldown_shape=self.tc.cooldown_shape)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
