"""One pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

from __future__ import annotations

import torch
from torch import nn

from leviathan.models.attention import CausalSelfAttention
from leviathan.models.mlp import SwiGLU
from leviathan.models.norm import RMSNorm
from leviathan.models.rope import RotaryEmbedding


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ffn_hidden: int, rope: RotaryEmbedding,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(d_model, eps)
        self.attn = CausalSelfAttention(d_model, n_heads, rope)
        self.mlp_norm = RMSNorm(d_model, eps)
        self.mlp = SwiGLU(d_model, ffn_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))

    def residual_projections(self) -> list[nn.Linear]:  # outputs added to the stream (scaled init)
        return [self.attn.out, self.mlp.down]
