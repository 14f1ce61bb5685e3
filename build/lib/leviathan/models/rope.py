"""Rotary position embeddings (LLaMA / GPT-NeoX "rotate half" convention)."""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Holds cos/sin tables for positions [0, max_seq_len) as non-persistent buffers."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        self.head_dim, self.max_seq_len, self.theta = head_dim, max_seq_len, theta
        cos, sin = self._tables()  # on the default device (meta when counting)
        self.register_buffer("cos", cos, persistent=False)  # (T_max, head_dim)
        self.register_buffer("sin", sin, persistent=False)  # (T_max, head_dim)

    def reset_parameters(self) -> None:  # recompute the tables (after meta init + to_empty)
        if self.cos.device.type != "meta":
            with torch.device(self.cos.device):
                cos, sin = self._tables()
            self.cos.copy_(cos)
            self.sin.copy_(sin)

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.head_dim // 2
        inv_freq = 1.0 / self.theta ** (torch.arange(half).float() / half)
        pos = torch.arange(self.max_seq_len).float()
        angles = torch.outer(pos, inv_freq)  # (T_max, half)
        angles = torch.cat([angles, angles], dim=-1)  # (T_max, head_dim)
        return angles.cos(), angles.sin()

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q, k of shape (B, H, T, head_dim) by their positions 0..T-1."""
        T = q.shape[-2]
        if T > self.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds model.max_seq_len={self.max_seq_len}")
        cos = self.cos[:T].to(q.dtype)  # (T, hd)
        sin = self.sin[:T].to(q.dtype)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:  # (..., hd): [x1, x2] -> [-x2, x1]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)

