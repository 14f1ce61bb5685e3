"""The training step in plain PyTorch: the loss, AdamW, clipping and the non-finite guard.

LanguageModelModule (Lightning) is built from these pieces, and so are `bench throughput` and
`bench gpu` (through TrainStep), so the benches time the step that training runs. Nothing here
imports Lightning, Hydra or MLflow.

The loss: `trainer.loss_impl=chunked` (the default) reads the model's final hidden states and
head weight and computes the cross-entropy `trainer.loss_chunk` tokens at a time
(leviathan/models/loss.py: the (tokens x V_pad) logits never exist at once); `plain` takes the
model's logits and F.cross_entropy, as validation does. Both give the same loss and gradients.
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch
import torch.nn.functional as F

from leviathan.models.loss import linear_cross_entropy
from leviathan.training.config import TrainerConfig

log = logging.getLogger(__name__)


class NonFiniteLoss(FloatingPointError):
    """The training loss (or gradient norm) became NaN or infinite; `step`: the first such."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


class LossOf:
    """batch (B, T + 1) token ids -> the mean next-token loss of `model` (a 0-dim tensor)."""

    def __init__(self, model: torch.nn.Module, tc: TrainerConfig) -> None:
        self.model, self.impl, self.chunk, self.compile = (model, tc.loss_impl, tc.loss_chunk,
                                                           tc.compile)
        self._body = None  # model.hidden (chunked) or the model (plain), compiled if asked

    def body(self):
        if self._body is None:
            if self.compile:  # by region, in place: LanguageModel.compile_regions
                self.model.compile_regions()
            self._body = self.model.hidden if self.impl == "chunked" else self.model
        return self._body

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x, y = batch[:, :-1], batch[:, 1:]  # (B, T), (B, T)
        if self.impl == "plain":
            logits = self.body()(x)  # (B, T, V_pad)
            return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        h = self.body()(x)  # (B, T, D)
        return linear_cross_entropy(h, self.model.head_weight(), y, chunk=self.chunk,
                                    fused=self.compile)


def make_optimizer(model: torch.nn.Module, tc: TrainerConfig) -> torch.optim.AdamW:
    """AdamW over the model's groups (no decay on norms, gains, codebooks, biases); fused with
    trainer.fused_adamw where this torch has the kernel for the parameters' device (CUDA; CPU
    from torch 2.4), else the foreach implementation."""
    groups = [{k: v for k, v in g.items() if k != "name"}
              for g in model.optim_groups(tc.weight_decay)]
    kw = dict(lr=tc.lr, betas=tuple(tc.betas), eps=tc.eps)
    if tc.fused_adamw:
        try:
            return torch.optim.AdamW(groups, fused=True, **kw)
        except RuntimeError as e:  # no fused kernel for this device in this torch
            log.warning(f"trainer.fused_adamw: {e}; using the foreach AdamW")
    return torch.optim.AdamW(groups, **kw)


def clip_grads(model: torch.nn.Module, tc: TrainerConfig) -> torch.Tensor:
    """Clip the complete gradients to trainer.grad_clip; return the pre-clip norm as a 0-dim
    tensor on the gradients' device (no host synchronisation: Lightning's loop reads it only at
    log steps, through `check_finite`)."""
    max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def check_finite(tc: TrainerConfig, loss: float, norm: float, step: int) -> None:
    """Raise NonFiniteLoss when the loss or the gradient norm of `step` is NaN or infinite."""
    if not math.isfinite(loss) or not math.isfinite(norm):
        what = f"train/loss={loss}" if not math.isfinite(loss) else f"grad_norm={norm}"
        raise NonFiniteLoss(
            f"non-finite {what} at step {step}: stopping. The last good checkpoint (if any) is "
            f"kept; lower trainer.lr (now {tc.lr}) or check the data.", step)


def clip_and_check(model: torch.nn.Module, tc: TrainerConfig, loss: float, step: int) -> float:
    """clip_grads, then check_finite at once (one host synchronisation: the benches' step)."""
    norm = clip_grads(model, tc).item()
    check_finite(tc, loss, norm, step)
    return norm


class TrainStep:
    """One optimizer step as LanguageModelModule takes it, without Lightning: the loss of each
    micro-batch (divided by their number, as Lightning's accumulation does), backward, clip and
    guard, AdamW, zero_grad. The learning rate stays at trainer.lr (no schedule)."""

    def __init__(self, model: torch.nn.Module, tc: TrainerConfig,
                 autocast: torch.dtype | None = None) -> None:
        self.model, self.tc, self.autocast = model, tc, autocast
        self.loss_of = LossOf(model, tc)
        self.optimizer = make_optimizer(model, tc)
        self.steps = 0

    def __call__(self, micro_batches: list[torch.Tensor]) -> dict[str, float]:
        dev = micro_batches[0].device.type
        total = torch.zeros((), device=micro_batches[0].device)
        for batch in micro_batches:
            ctx = (torch.autocast(dev, dtype=self.autocast) if self.autocast is not None
                   else contextlib.nullcontext())
            with ctx:
                loss = self.loss_of(batch) / len(micro_batches)
            loss.backward()
            total += loss.detach().float()
        self.steps += 1
        norm = clip_and_check(self.model, self.tc, total.item(), self.steps)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": total.item(), "grad_norm": norm}
