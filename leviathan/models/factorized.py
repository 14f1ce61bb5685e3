"""The `factorized` control arm's input representation: an ordinary low-rank table, no generator.

    e(i) = T[i] P        T: V_pad x r lookup table,  P: r x D projection

It sits on the Leviathan arm's backbone (same depth). r is model.factorized.rank
(accounting.factorized_rank):
- `match` (default): r (V_pad + D) as close as possible to the LEV generator's parameter count
  for the same config and form, so "LEV over factorized" isolates what the generator itself buys
  from "a cheap input representation plus the depth it buys" (SCIENCE.md section 2) at equal
  parameters; r comes out ~8, far below the rank LEV's table can reach;
- `span`: min(D, the most dimensions LEV's rows span, h + d_seed for blocks): a free table able
  to hold any table LEV can generate, with ~V_pad r parameters more; LEV over it says whether
  LEV's structure (rows tied through the codebooks and the splines) helps beyond its rank;
- an integer: that rank. Neither of the last two is parameter-matched; the plan shows the gap.
Init mirrors LEV's convention: rows of T with unit variance, e with std init_std.
Numerics as LEV's: computed in the parameters' dtype with autocast off (fp32 to the backbone).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FactorizedEmbedding(nn.Module):
    def __init__(self, vocab: int, rank: int, d_model: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.vocab, self.rank, self.d_model, self.init_std = vocab, rank, d_model, init_std
        self.weight = nn.Parameter(torch.empty(vocab, rank))  # T (V_pad, r)
        self.proj = nn.Linear(rank, d_model, bias=False)  # P, stored (D, r)
        if self.weight.device.type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=1.0)
        nn.init.normal_(self.proj.weight, std=self.init_std / math.sqrt(self.rank))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, D)
        with torch.autocast(self.weight.device.type, enabled=False):
            return self.proj(F.embedding(ids, self.weight))  # (B, T, r) -> (B, T, D)

    def compile_regions(self, **options) -> None:
        """The lookup and projection as one graph (static shapes; LanguageModel.compile_regions)."""
        self.compile(**options)

    def table(self) -> torch.Tensor:  # (V_pad, D): the whole input representation
        with torch.autocast(self.weight.device.type, enabled=False):
            return self.proj(self.weight)

    def param_roles(self) -> dict[str, str]:  # leviathan/models/roles.py
        return {"weight": "table", "proj.weight": "weight"}

    def extra_repr(self) -> str:
        return f"vocab={self.vocab}, rank={self.rank}, d_model={self.d_model}"
