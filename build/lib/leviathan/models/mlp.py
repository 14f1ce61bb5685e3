"""SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)  # W_gate, W_up stacked
        self.down = nn.Linear(hidden, d_model, bias=False)  # residual output projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)  # (B, T, F) each
        return self.down(F.silu(gate) * up)
