"""The run plan: numbers derived from the configs before anything is built.

`plan_run` turns a token budget into steps: tokens per step = global_batch x seq_len,
steps = ceil(budget / tokens per step). (A sweep's plan, all its runs, is
leviathan/sweep/plan.py.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from leviathan.training.config import TrainConfigError, TrainerConfig

# bytes per parameter in a checkpoint: fp32 weights + AdamW's two fp32 moments (bf16-mixed keeps
# fp32 weights too); the rest of a checkpoint (RNG, data position, scheduler) is a few KB
CKPT_BYTES_PER_PARAM = 12


def checkpoint_bytes(n_params: int) -> int:
    """The size of one checkpoint of a model with `n_params` parameters (weights + AdamW)."""
    return CKPT_BYTES_PER_PARAM * int(n_params)


def checkpoint_space(tc: TrainerConfig, n_params: int) -> int:
    """Scratch bytes a run's checkpoints take at their peak: the kept ones, the one being
    written, and the WSD-S snapshots."""
    return checkpoint_bytes(n_params) * (tc.keep_checkpoints + 1 + len(tc.snapshot_steps))


@dataclass
class RunPlan:
    """Numbers derived from the configs before anything is built."""

    seq_len: int  # tokens per sequence (data.seq_len)
    world_size: int  # data-parallel ranks
    micro_batch: int  # sequences per forward on one rank
    accumulation: int  # micro-batches per rank per step
    global_batch: int  # sequences per optimizer step
    tokens_per_step: int  # global_batch x seq_len
    budget_tokens: int  # the token budget the steps were derived from
    max_steps: int  # optimizer steps
    warmup_steps: int  # linear warm-up steps
    n_params: dict[str, int]  # total, input, head, body
    flops_per_token: float  # training FLOPs per token (model's own accounting)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_run(tc: TrainerConfig, seq_len: int, n_params: dict[str, int],
             flops_per_token: float) -> RunPlan:
    tokens_per_step = tc.global_batch * seq_len
    if tc.max_steps is not None:
        steps = tc.max_steps
        budget = steps * tokens_per_step
    else:
        if tc.tokens is not None:
            budget = tc.tokens
        else:
            budget = int(round(tc.tokens_per_param * n_params[tc.budget_params]))
        steps = max(1, math.ceil(budget / tokens_per_step))
    warmup = tc.warmup_steps if tc.warmup_steps is not None else int(tc.warmup_fraction * steps)
    if warmup >= steps and steps > 1:
        raise TrainConfigError(f"trainer.warmup_steps: {warmup} warm-up steps leave nothing of "
                               f"a {steps}-step run")
    return RunPlan(seq_len=seq_len, world_size=tc.world_size, micro_batch=tc.micro_batch,
                   accumulation=tc.accumulation, global_batch=tc.global_batch,
                   tokens_per_step=tokens_per_step, budget_tokens=int(budget), max_steps=steps,
                   warmup_steps=min(warmup, steps), n_params=dict(n_params),
                   flops_per_token=float(flops_per_token))
