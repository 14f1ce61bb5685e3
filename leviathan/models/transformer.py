"""The decoder-only language model shared by every arm.

    idx (B, T) -> input representation (DenseEmbedding | LevGenerator | FactorizedEmbedding)
               -> (B, T, D)
               -> n_layers pre-norm blocks -> final RMSNorm -> head -> logits (B, T, V_pad)

Heads: `untied` (its own V_pad x D matrix), `tied` (Dense: the input table), `generator`
(Leviathan: logits against LEV(0..V_pad-1), regenerated every forward in training and cached
in eval).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from leviathan.models.block import Block
from leviathan.models.config import ModelConfig
from leviathan.models.embedding import DenseEmbedding
from leviathan.models.factorized import FactorizedEmbedding
from leviathan.models.lev import LevGenerator
from leviathan.models.norm import RMSNorm
from leviathan.models.rope import RotaryEmbedding


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        V, D = cfg.padded_vocab, cfg.d_model
        self.embed: DenseEmbedding | LevGenerator | FactorizedEmbedding = input_representation(cfg)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(D, cfg.n_heads, cfg.ffn_dim, self.rope, cfg.norm_eps)
                                    for _ in range(cfg.n_layers))
        self.norm = RMSNorm(D, cfg.norm_eps)
        self.head = nn.Linear(D, V, bias=False) if cfg.head == "untied" else None  # (V_pad, D)
        if self.norm.weight.device.type != "meta":  # meta: shapes only (counting), no init
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) matrices; residual output projections scaled by 1/sqrt(2 L)."""
        std = self.cfg.init_std
        for block in self.blocks:
            for norm in (block.attn_norm, block.mlp_norm):
                norm.reset_parameters()
            nn.init.normal_(block.attn.qkv.weight, std=std)
            nn.init.normal_(block.mlp.gate_up.weight, std=std)
            for proj in block.residual_projections():
                nn.init.normal_(proj.weight, std=std / math.sqrt(2 * self.cfg.n_layers))
        self.norm.reset_parameters()
        self.rope.reset_parameters()
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=std)
        self.embed.reset_parameters()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) long -> (B, T, V_pad)
        return self.logits(self.hidden(idx))

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) long -> (B, T, D)
        """The final-normed hidden states the head reads (training's lean loss starts here)."""
        x = self.embed(idx)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def compile_regions(self, **options) -> None:
        """torch.compile by region, in place (state_dict keys unchanged): every block (the
        blocks share one compiled graph: their code and shapes are the same, parameters are
        graph inputs), the final norm, and the input representation's own regions (LEV's
        generator with a symbolic row count, the factorized lookup + projection; a Dense
        lookup needs none). Compiling the repeated block once instead of the unrolled stack
        keeps compile time independent of depth; data-dependent steps (LEV's torch.unique)
        stay eager between the graphs, so no graph breaks and no recompiles as the number of
        distinct ids varies (tests/unit/test_train_compile.py counts both)."""
        for block in self.blocks:
            block.compile(**options)
        self.norm.compile(**options)
        self.embed.compile_regions(**options)

    def head_weight(self) -> torch.Tensor:  # (V_pad, D): logits = h @ head_weight().T
        if self.head is not None:
            return self.head.weight
        return self.embed.table()  # tied table, or LEV(0..V_pad-1) for generator

    def logits(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, V_pad)
        return F.linear(h, self.head_weight())

    # ---- accounting and optimisation ------------------------------------------------------
    def param_counts(self):
        """ParamCounts(total, input, head, body) measured on this module's parameters."""
        from leviathan.models.accounting import ParamCounts

        def n(params) -> int:
            return sum(p.numel() for p in params)

        inp = n(self.embed.parameters())
        head = n(self.head.parameters()) if self.head is not None else 0
        body = n(self.blocks.parameters()) + n(self.norm.parameters())
        total = n(self.parameters())
        assert total == inp + head + body, "a parameter belongs to no accounting bucket"
        return ParamCounts(total=total, input=inp, head=head, body=body)

    def num_params(self, exclude_input: bool = False) -> int:
        counts = self.param_counts()
        return counts.total - counts.input if exclude_input else counts.total

    def param_roles(self) -> dict[str, str]:
        """Parameter name -> role (head, weight, table, coefficients, gain, bias; roles.py)."""
        roles = {f"embed.{n}": r for n, r in self.embed.param_roles().items()}
        if self.cfg.head == "tied":
            roles["embed.weight"] = "head"  # the tied table is scored as the head
        for name, p in self.named_parameters():
            if not name.startswith("embed."):
                roles[name] = "head" if name == "head.weight" else (
                    "weight" if p.ndim >= 2 else "gain")
        assert roles.keys() == dict(self.named_parameters()).keys(), "a parameter has no role"
        return roles

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups [decay, no_decay] by the one rule of roles.py, the same for every arm:
        decay heads (tied or untied) and weight matrices; not tables, spline coefficients,
        gains, biases."""
        from leviathan.models.roles import optim_groups

        return optim_groups(self.named_parameters(), self.param_roles(), weight_decay)

    def flops_per_token(self, seq_len: int) -> float:
        from leviathan.models.accounting import flops_per_token

        return flops_per_token(self.cfg, seq_len)


def input_representation(cfg: ModelConfig) -> nn.Module:
    """The arm's input: the Dense table, the LEV generator (its form) or the factorized table."""
    if cfg.arm == "dense":
        return DenseEmbedding(cfg.padded_vocab, cfg.d_model, cfg.init_std)
    if cfg.arm == "factorized":
        from leviathan.models.accounting import factorized_rank

        return FactorizedEmbedding(cfg.padded_vocab, factorized_rank(cfg), cfg.d_model,
                                   cfg.init_std)
    return LevGenerator(cfg)
