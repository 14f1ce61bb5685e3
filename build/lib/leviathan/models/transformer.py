"""The decoder-only language model shared by both arms.

    idx (B, T) -> input representation (DenseEmbedding | LevGenerator) -> (B, T, D)
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
from leviathan.models.lev import LevGenerator
from leviathan.models.norm import RMSNorm
from leviathan.models.rope import RotaryEmbedding


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        V, D = cfg.padded_vocab, cfg.d_model
        self.embed: DenseEmbedding | LevGenerator = (
            DenseEmbedding(V, D, cfg.init_std) if cfg.arm == "dense" else LevGenerator(cfg))
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
        x = self.embed(idx)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.logits(self.norm(x))

    def logits(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, V_pad)
        if self.head is not None:
            return self.head(h)
        return F.linear(h, self.embed.table())  # tied table, or LEV(0..V_pad-1) for generator

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

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on weight matrices (and Theta); none on norms, gains, biases,
        lookup tables (the Dense input table / tied head, LEV codebooks)."""
        tables = {id(p) for p in self.embed.lookup_tables()}
        decay, no_decay = [], []
        for _name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or id(p) in tables else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
                {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]

    def flops_per_token(self, seq_len: int) -> float:
        from leviathan.models.accounting import flops_per_token

        return flops_per_token(self.cfg, seq_len)
