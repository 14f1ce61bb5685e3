"""LEV without its splines (`model.lev.splines=false`): the ablation that keeps the codebooks and
the residual path only, in either form.

    z = sum_j C_j[c_j]                                     (d_seed)           seed (as LEV)
    e = W_r z                                              (D)                residual path only

No latent coordinate, no spline modes, no W_o: each token's embedding is a sum of k per-digit
vectors W_r C_j[c_j], so two ids sharing a base-b digit share that part of their embedding, and
the table's rank is at most d_seed. LEV over this control is what the spline part of the
generator buys beyond the base-b codebook sharing. The khronos form has no residual path of
its own; its ablation gains this W_r (the only path left).

Init as its form's, so that the ablation differs from it only by what it drops: the codebooks
keep the form's init (blocks: z with unit variance; khronos: N(0, init_std) rows), and W_r is
scaled so that e starts with std init_std (the form's output scale).
"""

from __future__ import annotations

import math

from torch import nn

from leviathan.models.config import ModelConfig
from leviathan.models.lev_base import LevGenerator


class CodebookLev(LevGenerator, splines=False):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.res_proj = nn.Linear(self.d_seed, cfg.d_model, bias=False)  # W_r
        if self.res_proj.weight.device.type != "meta":
            self.reset_parameters()

    def codebook_std(self) -> float:  # the form's: blocks 1/sqrt(k) (z ~ unit variance)
        return 1.0 / math.sqrt(self.k) if self.form == "blocks" else self.init_std

    def reset_parameters(self) -> None:
        """z as in the form; e = W_r z with std init_std."""
        std = self.codebook_std()
        nn.init.normal_(self.codebooks.weight, std=std)
        z_std = std * math.sqrt(self.k)  # a sum of k independent rows
        nn.init.normal_(self.res_proj.weight,
                        std=self.init_std / (z_std * math.sqrt(self.d_seed)))
        self.reset_offsets()
        self.invalidate_cache()

    def embed_seed(self, z):  # (N, ds) -> e (N, D)
        return self.res_proj(z)

    def param_roles(self) -> dict[str, str]:
        return {**super().param_roles(), "res_proj.weight": "weight"}

    def extra_repr(self) -> str:
        return (f"form={self.form}, splines=False, vocab={self.vocab}, k={self.k}, "
                f"base={self.base}, d_seed={self.d_seed}")
