"""Causal multi-head self-attention: fused QKV projection, RoPE, SDPA, output projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leviathan.models.rope import RotaryEmbedding


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, rope: RotaryEmbedding) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)  # W_q, W_k, W_v stacked
        self.out = nn.Linear(d_model, d_model, bias=False)  # W_o (residual output projection)
        self.rope = rope  # shared tables; not a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim)  # (B, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
        q, k = self.rope(q, k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, D))
