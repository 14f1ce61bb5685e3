"""The Dense arm's input representation: one V_pad x D lookup table."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DenseEmbedding(nn.Module):
    def __init__(self, vocab: int, d_model: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.init_std = init_std
        self.weight = nn.Parameter(torch.empty(vocab, d_model))  # (V_pad, D); tied head reuses it
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, D)
        return F.embedding(ids, self.weight)

    def compile_regions(self, **options) -> None:
        """Nothing to compile: one lookup (LanguageModel.compile_regions)."""

    def table(self) -> torch.Tensor:  # (V_pad, D): the whole input representation
        return self.weight

    def param_roles(self) -> dict[str, str]:  # a table; the tied head makes it the head (roles.py)
        return {"weight": "table"}
