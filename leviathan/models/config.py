"""The `model` config group: typed ModelConfig / LevConfig, registered in Hydra's ConfigStore.

Every error is a ConfigError whose message starts with the config key (``model.<field>`` or
``model.lev.<field>``) and, for a choice, lists the allowed values. ``to_model_config`` accepts a
ModelConfig, an OmegaConf DictConfig or a plain dict (or a whole train config with a ``model``
node) and returns a validated ModelConfig.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.typed_config import (
    above,
    at_least,
    boolean,
    check_fields,
    in_range,
    optional,
    positive,
)

ARMS = ("dense", "leviathan", "factorized")
HEADS_BY_ARM = {"dense": ("tied", "untied"), "leviathan": ("untied", "generator"),
                "factorized": ("untied",)}
DEPTH_RULES = ("fixed", "isoparametric")
LADDERS = ("v1", "v2", "debug", "bench", "custom")  # v1/v2 sizes: conf/model/<ladder>/*.yaml
LEV_IMPLS = ("matmul", "bag")
LEV_FORMS = ("blocks", "khronos")  # docs/LEV_FORMS.md
FACTORIZED_RANKS = ("match", "span")  # model.factorized.rank, besides an integer


class ConfigError(LeviathanError, ValueError):
    """A model config value is invalid; the message names the key and the allowed values."""


@dataclass
class LevConfig:
    form: str = "blocks"  # "blocks" (LEV.md: Q blocks, M modes, W_r) | "khronos" (heads, knots)
    k: int = 3  # number of coordinates per token id = number of codebooks
    d_seed: int = 128  # seed / latent dimension (paper: 128)
    n_modes: int = 8  # M, rank: separable modes summed (paper: 8)
    order: int = 4  # Q, interaction order: contiguous blocks of latent coords multiplied
    grid_size: int = 8  # G, uniform B-spline intervals on [0, 1]
    degree: int = 3  # B-spline degree (3 = cubic); n_b = grid_size + degree basis functions
    hidden: int = 128  # h, width of every mode f_{m,q} before the output projection W_o
    residual: bool = True  # add W_r z, the residual path from the seed to the embedding
    base: int | None = None  # b; null = smallest integer with b**k >= padded vocabulary
    impl: str = "matmul"  # "matmul" (dense basis x Theta, BLAS) | "bag" (local rows, embedding_bag)
    table_chunk: int = 16384  # token ids per chunk when the eval table is materialised
    heads: int = 8  # (khronos) h heads, each with its own W_seed, LayerNorm, S and W_out
    knots: int = 16  # (khronos) kappa knots on [0, 1], one basis function centred on each
    knot_degree: int = 2  # (khronos) degree of the knot-centred B-splines (2 = quadratic)
    rank: int = 64  # (khronos) r, modes per head: S is d_seed x kappa x r, W_out is r x D
    one_plus_delta: bool = True  # (khronos) S = 1 + Delta with Delta learned; false: S learned
    delta_std: float = 0.1  # (khronos) init std of Delta (S starts at 1 + N(0, delta_std))
    latent_temp: float = 2.0  # (khronos) x = sigmoid(LayerNorm(W_seed z) / latent_temp)
    log_product: bool = True  # (khronos) product over d_seed as log magnitude + sign parity
    checkpoint: bool = True  # (khronos) recompute each head's factors in backward (memory)
    splines: bool = True  # false: the ablation e = W_r z, codebooks + residual path only (no
    #   latent, spline modes or W_o; either form): what the base-b codebook sharing buys alone

    _checks = {
        "k": positive(), "d_seed": positive(), "n_modes": positive(), "order": positive(),
        "grid_size": positive(), "degree": at_least(0), "hidden": positive(),
        "residual": boolean(), "base": optional(at_least(2)), "table_chunk": positive(),
        "heads": positive(), "knots": at_least(2), "knot_degree": at_least(0), "rank": positive(),
        "one_plus_delta": boolean(), "delta_std": in_range(0), "latent_temp": above(0),
        "log_product": boolean(), "checkpoint": boolean(), "splines": boolean(),
    }

    @property
    def n_basis(self) -> int:  # n_b, B-spline basis functions per latent coordinate
        return self.grid_size + self.degree

    def solve_base(self, v_pad: int) -> int:  # b: smallest integer with b**k >= v_pad
        if self.base is not None:
            return self.base
        b = max(2, math.ceil(v_pad ** (1.0 / self.k)) - 1)
        while b**self.k < v_pad:
            b += 1
        return b


def _rank(v: Any) -> str | None:
    if v in FACTORIZED_RANKS or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return None
    return f"must be {', '.join(FACTORIZED_RANKS)} or an integer >= 1"


@dataclass
class FactorizedConfig:
    rank: int | str = "match"  # r of arm=factorized: match (r (V_pad + D) closest to LEV's
    #   parameter count: parameter-matched) | span (min(D, the most dimensions LEV's rows span:
    #   h + d_seed for blocks): a table of LEV's rank, not matched) | an integer (not matched)

    _checks = {"rank": _rank}


@dataclass
class ModelConfig:
    arm: str = "dense"  # "dense" (table) | "leviathan" (LEV) | "factorized" (V x r, r x D control)
    head: str = "untied"  # tied|untied (dense); untied|generator (leviathan); untied (factorized)
    size: str = "debug"  # ladder name of the Dense size ("109M", "1.2B", ...); a label elsewhere
    ladder: str = "debug"  # v1 (Dense untied totals) | v2 (Dense tied totals) | debug|bench|custom
    d_model: int = 64  # residual stream width D
    n_layers: int = 2  # transformer blocks (with depth_rule=isoparametric: the Dense depth)
    n_heads: int = 4  # attention heads; head_dim = d_model / n_heads
    ffn_hidden: int | None = None  # SwiGLU hidden width; null = round_up(8/3 d_model, ffn_multiple)
    ffn_multiple: int = 64  # rounding multiple for the default ffn_hidden
    vocab_size: int = 200019  # token ids the tokenizer emits (o200k_base: 200,019)
    vocab_pad_to: int | None = 200376  # padded vocabulary size (paper: 200,376); null = vocab_size
    vocab_pad_multiple: int = 1  # then round the padded vocabulary up to this multiple
    max_seq_len: int = 512  # longest sequence the rotary tables cover
    depth_rule: str = "fixed"  # "fixed" | "isoparametric" (leviathan depth matched to the Dense)
    iso_dense_head: str = "untied"  # head of the Dense model the isoparametric rule matches
    dense_n_layers: int | None = None  # set by resolve_model_config: the Dense depth it matched
    rope_theta: float = 10000.0  # rotary base frequency
    norm_eps: float = 1e-5  # RMSNorm / LayerNorm epsilon
    init_std: float = 0.02  # std of every weight matrix / table at init (residual outs scaled)
    factorized: FactorizedConfig = field(default_factory=FactorizedConfig)  # arm=factorized
    lev: LevConfig = field(default_factory=LevConfig)  # the LEV generator (arm=leviathan only)

    _checks = {
        "d_model": positive(), "n_layers": positive(), "n_heads": positive(),
        "ffn_hidden": optional(positive()), "ffn_multiple": positive(),
        "vocab_size": positive(), "vocab_pad_to": optional(positive()),
        "vocab_pad_multiple": positive(), "max_seq_len": positive(),
        "dense_n_layers": optional(positive()), "rope_theta": above(0), "norm_eps": above(0),
        "init_std": above(0),
    }

    def __post_init__(self) -> None:
        if isinstance(self.lev, dict):
            self.lev = _lev_from_dict(self.lev)
        if isinstance(self.factorized, dict):
            from leviathan.typed_config import to_config

            self.factorized = to_config(FactorizedConfig, self.factorized, "model.factorized",
                                        ConfigError)
        self.validate()

    # ---- derived sizes ------------------------------------------------------------------
    @property
    def padded_vocab(self) -> int:  # V_pad
        v = max(self.vocab_size, self.vocab_pad_to or 0)
        m = self.vocab_pad_multiple
        return -(-v // m) * m

    @property
    def ffn_dim(self) -> int:  # SwiGLU hidden width actually used
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        raw = int(8 * self.d_model / 3)
        return -(-raw // self.ffn_multiple) * self.ffn_multiple

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def lev_base(self) -> int:  # b for this vocabulary
        return self.lev.solve_base(self.padded_vocab)

    def replace(self, **changes: Any) -> ModelConfig:  # a validated copy with fields changed
        if "lev" in changes and isinstance(changes["lev"], dict):
            changes["lev"] = dataclasses.replace(self.lev, **changes["lev"])
        if "factorized" in changes and isinstance(changes["factorized"], dict):
            changes["factorized"] = dataclasses.replace(self.factorized, **changes["factorized"])
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> ModelConfig:
        _choice("model.arm", self.arm, ARMS)
        _choice("model.head", self.head, HEADS_BY_ARM[self.arm],
                why=f" for model.arm={self.arm!r}")
        _choice("model.ladder", self.ladder, LADDERS)
        _choice("model.depth_rule", self.depth_rule, DEPTH_RULES)
        _choice("model.iso_dense_head", self.iso_dense_head, HEADS_BY_ARM["dense"])
        if self.ladder in ("v1", "v2"):  # the sizes are the files conf/model/<ladder>/*.yaml
            from leviathan.models.ladder import ladder_sizes

            _choice("model.size", self.size, tuple(ladder_sizes(self.ladder)),
                    why=f" for model.ladder={self.ladder!r}")
        check_fields(self, "model", ConfigError)
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model={self.d_model} must be divisible by "
                              f"model.n_heads={self.n_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"model.n_heads={self.n_heads}: head_dim = d_model / n_heads = "
                              f"{self.head_dim} must be even for rotary embeddings")
        if self.vocab_pad_to is not None and self.vocab_pad_to < self.vocab_size:
            raise ConfigError(f"model.vocab_pad_to={self.vocab_pad_to} must be >= "
                              f"model.vocab_size={self.vocab_size} (the tokenizer's ids)")
        self._validate_lev()
        check_fields(self.factorized, "model.factorized", ConfigError)
        return self

    @property
    def parameter_matched(self) -> bool:
        """Whether this arm's input is sized to match another arm's parameter count: Leviathan
        with its full generator, factorized with rank=match (the isoparametric check's arms)."""
        if self.arm == "leviathan":
            return self.lev.splines
        return self.arm == "factorized" and self.factorized.rank == "match"

    def _validate_lev(self) -> None:
        lev = self.lev
        _choice("model.lev.form", lev.form, LEV_FORMS)
        _choice("model.lev.impl", lev.impl, LEV_IMPLS)
        check_fields(lev, "model.lev", ConfigError)
        if not lev.splines and not lev.residual:
            raise ConfigError("model.lev.splines=false keeps only the residual path e = W_r z; "
                              "it needs model.lev.residual=true")
        if lev.form == "blocks" and lev.d_seed % lev.order:
            raise ConfigError(f"model.lev.order={lev.order} (Q) must divide "
                              f"model.lev.d_seed={lev.d_seed}")
        b, v_pad = lev.solve_base(self.padded_vocab), self.padded_vocab
        if b**lev.k < v_pad:
            raise ConfigError(f"model.lev.base={b}: base**k = {b}**{lev.k} = {b**lev.k} must be "
                              f">= the padded vocabulary {v_pad} (model.vocab_pad_to / "
                              f"model.vocab_size)")


def check_tokenizer_vocab(cfg: ModelConfig, n_vocab: int, *, tokenizer: str = "tokenizer") -> None:
    """Raise ConfigError unless the model covers every id the tokenizer can emit."""
    if cfg.vocab_size < n_vocab:
        raise ConfigError(f"model.vocab_size={cfg.vocab_size} is smaller than the {n_vocab} ids "
                          f"of {tokenizer}; set model.vocab_size >= {n_vocab}")


def _choice(key: str, value: Any, allowed: tuple[str, ...], why: str = "") -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed{why}; allowed values: "
                          f"{', '.join(map(str, allowed))}")


def _lev_from_dict(d: dict[str, Any]) -> LevConfig:
    from leviathan.typed_config import to_config

    return to_config(LevConfig, d, "model.lev", ConfigError)


def to_model_config(cfg: Any) -> ModelConfig:
    """A validated ModelConfig from a ModelConfig, DictConfig, dict, or a config with `.model`."""
    from leviathan.typed_config import to_config

    if not isinstance(cfg, ModelConfig) and hasattr(cfg, "keys") and "model" in cfg \
            and "arm" not in cfg:
        cfg = cfg["model"]
    return to_config(ModelConfig, cfg, "model", ConfigError)
