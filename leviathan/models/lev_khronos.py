"""LEV's `khronos` form: the generator as a public third-party reimplementation describes it.

    per head l = 1..h:
      x_l = sigmoid(LayerNorm_l(W_seed,l z) / temp)           (d_seed) in (0,1)  latent coordinate
      B[d, g] = b_g(x_l[d]) / sum_g' b_g'(x_l[d])            (d_seed, kappa)    knot-centred basis
      phi[d, rho] = sum_g B[d, g] S_l[d, g, rho]             (d_seed, r)        S_l = 1 + Delta_l
      M_l[rho] = prod_{d=1..d_seed} phi[d, rho]              (r)                all coordinates
    e = sum_l M_l W_out,l                                    (D)                no residual path

b_g is the degree-p (default quadratic) uniform B-spline centred on knot g of kappa uniform knots
on [0, 1] (bspline.centred_local_basis). The product runs over all d_seed coordinates, as log
magnitude plus a sign parity (the authors' KHRONOS work), in fp32 at least. Parameters: W_seed
stacked as one (h d_seed) x d_seed linear, LayerNorm gains and biases (h, d_seed), the
coefficients (h, d_seed, kappa, r) (Delta, or S itself with one_plus_delta=false), W_out stacked
as one D x (h r) linear. Init: codebooks and W_seed N(0, init_std), Delta N(0, delta_std),
W_out N(0, init_std / sqrt(h)).

Memory: phi is (N, d_seed, r) per head, 32x the blocks form's largest activation at the paper's
sizes; with lev.checkpoint each head's phi is recomputed in backward instead of stored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from leviathan.models.bspline import centred_dense_basis, centred_local_basis
from leviathan.models.config import ModelConfig
from leviathan.models.lev_base import LevGenerator


def mode_product(phi: torch.Tensor, dim: int, log_domain: bool = True) -> torch.Tensor:
    """prod over `dim` of phi; log_domain: exp(sum log|phi|) times the sign parity, computed in
    fp32 (or phi's dtype when wider). A factor that is exactly 0 counts as the smallest normal."""
    if not log_domain:
        return phi.prod(dim)
    if phi.dtype in (torch.float16, torch.bfloat16):
        phi = phi.float()
    magnitude = phi.abs().clamp_min(torch.finfo(phi.dtype).tiny).log().sum(dim)
    odd = (phi < 0).sum(dim) % 2 == 1  # an odd number of negative factors
    return torch.where(odd, -1.0, 1.0).to(phi.dtype) * magnitude.exp()


class KhronosLev(LevGenerator):
    form = "khronos"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        lev, ds = cfg.lev, cfg.lev.d_seed
        self.heads, self.knots, self.knot_degree, self.rank = (lev.heads, lev.knots,
                                                               lev.knot_degree, lev.rank)
        self.one_plus_delta, self.delta_std = lev.one_plus_delta, lev.delta_std
        self.latent_temp, self.log_product = lev.latent_temp, lev.log_product
        self.recompute, self.eps = lev.checkpoint, cfg.norm_eps
        h = self.heads
        self.seed_proj = nn.Linear(ds, h * ds, bias=False)  # W_seed,1..h stacked
        self.norm_gain = nn.Parameter(torch.empty(h, ds))  # LayerNorm_l gains
        self.norm_bias = nn.Parameter(torch.empty(h, ds))  # LayerNorm_l biases
        self.coef = nn.Parameter(torch.empty(h, ds, self.knots, self.rank))  # Delta_l (or S_l)
        self.out_proj = nn.Linear(h * self.rank, cfg.d_model, bias=False)  # W_out,1..h stacked
        if self.coef.device.type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.codebooks.weight, std=self.init_std)
        nn.init.normal_(self.seed_proj.weight, std=self.init_std)
        nn.init.ones_(self.norm_gain)
        nn.init.zeros_(self.norm_bias)
        nn.init.normal_(self.coef, mean=0.0 if self.one_plus_delta else 1.0, std=self.delta_std)
        nn.init.normal_(self.out_proj.weight, std=self.init_std / math.sqrt(self.heads))
        self.reset_offsets()
        self.invalidate_cache()

    def coefficients(self, head: int) -> torch.Tensor:  # S_l (ds, kappa, r)
        return 1.0 + self.coef[head] if self.one_plus_delta else self.coef[head]

    def latent(self, z: torch.Tensor) -> torch.Tensor:  # (N, ds) -> x (N, h, ds) in (0, 1)
        pre = self.seed_proj(z).view(z.shape[0], self.heads, self.d_seed)
        y = F.layer_norm(pre, (self.d_seed,), eps=self.eps) * self.norm_gain + self.norm_bias
        return torch.sigmoid(y / self.latent_temp)

    def head_modes(self, x: torch.Tensor, head: int) -> torch.Tensor:
        """x (N, ds) of one head -> M_l (N, r)."""
        N, ds, kappa, p = x.shape[0], self.d_seed, self.knots, self.knot_degree
        S = self.coefficients(head)  # (ds, kappa, r)
        if self.impl == "matmul":
            B = centred_dense_basis(x, kappa, p)  # (N, ds, kappa), p+1 non-zeros per row
            phi = torch.bmm(B.transpose(0, 1), S)  # (ds, N, r)
            return mode_product(phi, 0, self.log_product)
        index, values = centred_local_basis(x, kappa, p)  # (N, ds, p+1) each
        rows = index + (torch.arange(ds, device=x.device) * kappa).unsqueeze(-1)  # rows of S
        phi = F.embedding_bag(rows.view(N * ds, p + 1), S.reshape(ds * kappa, self.rank),
                              per_sample_weights=values.view(N * ds, p + 1), mode="sum")
        return mode_product(phi.view(N, ds, self.rank), 1, self.log_product)  # (N, r)

    def embed_seed(self, z: torch.Tensor) -> torch.Tensor:  # (N, ds) -> e (N, D)
        x = self.latent(z)  # (N, h, ds)
        recompute = self.recompute and torch.is_grad_enabled()
        modes = [checkpoint(self.head_modes, x[:, h], h, use_reentrant=False) if recompute
                 else self.head_modes(x[:, h], h) for h in range(self.heads)]
        M = torch.stack(modes, 1)  # (N, h, r)
        return self.out_proj(M.flatten(1).to(self.out_proj.weight.dtype))  # sum_l M_l W_out,l

    def param_roles(self) -> dict[str, str]:
        return {**super().param_roles(), "seed_proj.weight": "weight", "norm_gain": "gain",
                "norm_bias": "bias", "coef": "coefficients", "out_proj.weight": "weight"}

    def extra_repr(self) -> str:
        return (f"form=khronos, vocab={self.vocab}, k={self.k}, base={self.base}, "
                f"d_seed={self.d_seed}, heads={self.heads}, knots={self.knots}, "
                f"degree={self.knot_degree}, rank={self.rank}, "
                f"one_plus_delta={self.one_plus_delta}, log_product={self.log_product}, "
                f"impl={self.impl}")
