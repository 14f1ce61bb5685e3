"""The typed `trainer` config, and the config hash (with `flatten`, the run's params).

Errors name the config key (``trainer.<field>``). The run plan derived from it is
leviathan/training/plan.py; the `tracking` schema is leviathan/tracking/config.py, the `paths`
schema leviathan/paths.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from leviathan.errors import TrainConfigError
from leviathan.training.schedule import COOLDOWN_SHAPES, SCHEDULES
from leviathan.typed_config import (
    above,
    at_least,
    check_fields,
    choice,
    each,
    in_range,
    optional,
    positive,
)

BUDGET_PARAMS = ("total", "body", "input", "head")
LOSS_IMPLS = ("chunked", "plain")  # the training loss (validation always uses the plain path)
# config subtrees that do not change what a run computes: excluded from config_hash
HASH_EXCLUDE = ("tracking", "paths", "meta", "run_name", "resume", "hydra", "local")
# trainer keys that only say how checkpoints are kept or how long ranks wait for each other:
# excluded too (changing them, or adding them, leaves a run's hash and so its resume alone)
HASH_EXCLUDE_TRAINER = ("keep_checkpoints", "restart_if_corrupt", "ddp_timeout_s")


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"  # cpu | gpu | auto (Lightning)
    devices: int = 1  # devices per node
    num_nodes: int = 1  # nodes (multi-node through Lightning's SLURM environment)
    strategy: str = "auto"  # Lightning strategy: auto | ddp (several devices) | ...
    ddp_timeout_s: float = 1800.0  # several ranks: how long a rank waits for its peers, at start-up
    #   (the rendezvous: then it stops, naming the address it could not reach) and in every
    #   collective (keep it above the longest checkpoint write); torch's default
    precision: str = "32-true"  # Lightning precision: 32-true | bf16-mixed | ...
    compile: bool = False  # torch.compile the model by region (LanguageModel.compile_regions:
    #   each block, the final norm, LEV's generator with a dynamic row count)
    fused_adamw: bool = False  # AdamW's fused kernel (CUDA; CPU from torch 2.4, else foreach)
    loss_impl: str = "chunked"  # training loss: chunked (lean: the tokens x V_pad logits never
    #   all held at once, models/loss.py) | plain (all logits; validation always uses it)
    loss_chunk: int = 1024  # chunked: tokens per chunk (memory: chunk x V_pad fp32 logits)
    matmul_precision: str = "high"  # torch.set_float32_matmul_precision (TF32 on Ampere+)
    global_batch: int = 512  # sequences per optimizer step over all ranks (paper: 512 x 512 tokens)
    micro_batch: int = 16  # sequences per forward/backward on one device
    lr: float = 3e-4  # peak learning rate (AdamW)
    min_lr: float = 3e-5  # the floor the schedule decays to (cosine, wsd)
    schedule: str = "cosine"  # cosine | wsd (warm-up, stable, cooldown) | constant (WSD-S main run)
    cooldown_fraction: float = 0.2  # wsd: share of the steps spent decaying (10-20%: Hägele 2024)
    cooldown_shape: str = "linear"  # wsd: linear | 1-sqrt decay to min_lr
    init_from: str | None = None  # start (not resume) from this checkpoint: weights, optimizer,
    #   step, data position and RNG, in a new MLflow run (a WSD-S cooldown branch)
    snapshot_steps: list[int] = field(default_factory=list)  # also keep step_<s>.ckpt at these
    #   steps (the WSD-S main run: its branches start there)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.1  # decoupled; by parameter role, every arm alike (models/roles.py)
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping; the norm is logged either
    #   way)
    warmup_steps: int | None = None  # linear warm-up steps; null: warmup_fraction x total steps
    warmup_fraction: float = 0.01  # warm-up share of the run when warmup_steps is null
    tokens: int | None = None  # absolute token budget; null: tokens_per_param x
    #   n_params[budget_params]
    tokens_per_param: float = 20.0  # the budget in tokens per parameter (Chinchilla-style 20 N)
    budget_params: str = "total"  # which count N is: total | body | input | head
    max_steps: int | None = None  # fixed step count, overriding the token budget (debugging)
    val_every: int = 500  # validate every K optimizer steps (and always at the end)
    val_batches: int | None = None  # validation micro-batches to use (null: the whole fixed set)
    val_micro_batch: int | None = None  # sequences per validation batch (null: micro_batch)
    freq_buckets: str = "quantile"  # rare-token buckets: quantile (equal shares of the
    #   validation tokens, rarest first) | log (training count [b^(i-1), b^i))
    freq_quantiles: int = 10  # quantile buckets: how many (10: deciles)
    freq_bucket_base: float = 10.0  # rare-token metric: buckets of training count [b^(i-1), b^i),
    #   plus 0
    ckpt_every: int = 500  # checkpoint every K optimizer steps (and on SIGTERM/SIGUSR1, at the end)
    keep_checkpoints: int = 2  # checkpoints kept (last.ckpt + prev_<step>.ckpt), each with its
    #   sha256: a resume falls back to the newest intact one (WSD-S snapshots are kept apart)
    restart_if_corrupt: bool = False  # when no kept checkpoint is intact: start afresh (else the
    #   run stops, saying so)
    log_every: int = 10  # train metrics and a progress line every K optimizer steps
    peak_flops: float | None = None  # peak FLOP/s of one device for MFU (null: MFU not logged,
    #   FLOP/s is)

    _checks = {
        "devices": positive(), "num_nodes": positive(), "global_batch": positive(),
        "micro_batch": positive(), "val_every": positive(), "ckpt_every": positive(),
        "keep_checkpoints": positive(),
        "log_every": positive(), "loss_chunk": positive(), "warmup_steps": optional(at_least(0)),
        "tokens": optional(at_least(0)), "max_steps": optional(positive()),
        "val_batches": optional(at_least(0)), "val_micro_batch": optional(at_least(0)),
        "lr": above(0), "min_lr": in_range(0), "schedule": choice(*SCHEDULES),
        "cooldown_shape": choice(*COOLDOWN_SHAPES),
        "cooldown_fraction": in_range(0, 1, lo_open=True),
        "weight_decay": in_range(0), "grad_clip": in_range(0), "eps": above(0),
        "warmup_fraction": in_range(0, 1, hi_open=True), "loss_impl": choice(*LOSS_IMPLS),
        "budget_params": choice(*BUDGET_PARAMS), "tokens_per_param": in_range(0),
        "freq_buckets": choice("quantile", "log"), "freq_quantiles": at_least(2),
        "freq_bucket_base": above(1), "peak_flops": optional(above(0)),
        "snapshot_steps": each(positive()), "ddp_timeout_s": above(0),
    }

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> TrainConfigError:
            return TrainConfigError(f"trainer.{key}: {msg}")

        self.betas = tuple(float(b) for b in self.betas)
        check_fields(self, "trainer", TrainConfigError)
        if not self.min_lr <= self.lr:
            raise bad("min_lr", f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, "
                                f"min_lr={self.min_lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise bad("betas", f"must be two numbers in [0, 1), got {list(self.betas)}")
        if self.tokens is None and self.max_steps is None and not self.tokens_per_param > 0:
            raise bad("tokens_per_param", "must be > 0 when trainer.tokens and max_steps are null")
        if any(w in self.strategy for w in ("spawn", "fork", "notebook")):
            raise bad("strategy", f"{self.strategy!r}: every rank must start the run itself "
                                  "(it builds its own share of the data); use ddp")
        world = self.world_size
        per_step = self.micro_batch * world
        if self.global_batch % per_step:
            raise bad("global_batch", f"{self.global_batch} is not a multiple of micro_batch x "
                                      f"devices x num_nodes = {self.micro_batch} x "
                                      f"{self.devices} x {self.num_nodes} = {per_step}")

    @property
    def world_size(self) -> int:  # data-parallel ranks
        return self.devices * self.num_nodes

    @property
    def accumulation(self) -> int:  # micro-batches per rank per optimizer step
        return self.global_batch // (self.micro_batch * self.world_size)


def _typed(cls, node: Any, group: str):
    from leviathan.typed_config import to_config

    return to_config(cls, node, group, TrainConfigError)


def trainer_config(cfg: Any) -> TrainerConfig:
    """TrainerConfig from the run config's `trainer` node (or the node itself)."""
    node = cfg.trainer if hasattr(cfg, "trainer") else cfg
    return _typed(TrainerConfig, node, "trainer")


def resolved_container(cfg: Any) -> dict:
    """The run config as plain, fully resolved Python (without Hydra's own node)."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    return out


def config_hash(cfg: Any) -> str:
    """sha256 of the resolved config minus tracking, paths, meta, naming keys and how
    checkpoints are kept.

    Two runs with the same hash compute the same thing, whatever sweep launched them.
    """
    container = cfg if isinstance(cfg, dict) else resolved_container(cfg)
    kept = {k: v for k, v in container.items() if k not in HASH_EXCLUDE}
    if isinstance(kept.get("trainer"), dict):
        kept["trainer"] = {k: v for k, v in kept["trainer"].items()
                           if k not in HASH_EXCLUDE_TRAINER}
    blob = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"d_model": 64}} -> {"model.d_model": 64}; lists are kept as values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
