"""LEV's `blocks` form (LEV.md, the default): Q blocks, M separable modes, the residual W_r z.

    x = sigmoid(LayerNorm(W_s z + beta_s))                 (d_seed) in (0,1)  latent coordinate
    f_{m,q} = sum_{r in R_q} Theta_{m,r}^T phi(x_r)        (h)                Q blocks R_q
    a = sum_m prod_q f_{m,q}                               (h)                M separable modes
    e = W_o a + W_r z                                      (D)                output (+ residual)

phi is the cubic B-spline basis with local support (bspline.py). Theta is stored as one tensor
(d_seed, n_b, M, h): Theta[r, :, m, :] = Theta_{m,r}. Because the Q blocks are contiguous, its
view (Q, R n_b, M h) turns all M x Q mode functions into one batched matmul per block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from leviathan.models.bspline import dense_basis, local_basis
from leviathan.models.config import ModelConfig
from leviathan.models.lev_base import LevGenerator


class BlocksLev(LevGenerator):
    form = "blocks"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        lev, ds = cfg.lev, cfg.lev.d_seed
        self.n_modes, self.order, self.hidden = lev.n_modes, lev.order, lev.hidden
        self.grid_size, self.degree, self.n_basis = lev.grid_size, lev.degree, lev.n_basis
        self.residual = lev.residual
        self.seed_proj = nn.Linear(ds, ds, bias=True)  # W_s, beta_s
        self.seed_norm = nn.LayerNorm(ds, eps=cfg.norm_eps)  # gain and bias
        # Theta[r, :, m, :] = Theta_{m,r} (n_b x h)
        self.theta = nn.Parameter(torch.empty(ds, self.n_basis, self.n_modes, self.hidden))
        self.out_proj = nn.Linear(self.hidden, cfg.d_model, bias=False)  # W_o
        self.res_proj = nn.Linear(ds, cfg.d_model, bias=False) if self.residual else None  # W_r
        if self.theta.device.type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """z and every f_{m,q} start with unit variance, e with std init_std."""
        nn.init.normal_(self.codebooks.weight, std=1.0 / math.sqrt(self.k))
        nn.init.normal_(self.seed_proj.weight, std=1.0 / math.sqrt(self.d_seed))
        nn.init.zeros_(self.seed_proj.bias)
        self.seed_norm.reset_parameters()
        self.reset_offsets()
        # a coordinate contributes a convex mix of p+1 rows (sum of squared weights ~ 1/2)
        block = self.d_seed // self.order
        nn.init.normal_(self.theta, std=math.sqrt(2.0 / block))
        paths = 2 if self.residual else 1
        nn.init.normal_(self.out_proj.weight,
                        std=self.init_std / math.sqrt(paths * self.n_modes * self.hidden))
        if self.res_proj is not None:
            nn.init.normal_(self.res_proj.weight,
                            std=self.init_std / math.sqrt(paths * self.d_seed))
        self.invalidate_cache()

    def latent(self, z: torch.Tensor) -> torch.Tensor:  # (N, ds) -> x in (0, 1)^ds
        return torch.sigmoid(self.seed_norm(self.seed_proj(z)))

    def modes(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, ds) -> f (Q, N, M h): f[q, :, m h..] = f_{m,q}(x)."""
        N, Q = x.shape[0], self.order
        R, nb, width = self.d_seed // Q, self.n_basis, self.n_modes * self.hidden
        if self.impl == "matmul":
            phi = dense_basis(x, self.grid_size, self.degree)  # (N, ds, nb), p+1 non-zeros / row
            phi = phi.view(N, Q, R * nb).transpose(0, 1)  # (Q, N, R nb)
            return torch.bmm(phi, self.theta.view(Q, R * nb, width))  # (Q, N, M h)
        span, values = local_basis(x, self.grid_size, self.degree)  # (N, ds), (N, ds, p+1)
        p1 = self.degree + 1
        r = torch.arange(self.d_seed, device=x.device) * nb  # first Theta row of coordinate r
        rows = (r + span).unsqueeze(-1) + torch.arange(p1, device=x.device)  # (N, ds, p+1)
        bags = rows.view(N, Q, R * p1).transpose(0, 1).reshape(Q * N, R * p1)
        weights = values.view(N, Q, R * p1).transpose(0, 1).reshape(Q * N, R * p1)
        f = F.embedding_bag(bags, self.theta.view(self.d_seed * nb, width),
                            per_sample_weights=weights, mode="sum")  # (Q N, M h)
        return f.view(Q, N, width)

    def embed_seed(self, z: torch.Tensor) -> torch.Tensor:  # (N, ds) -> e (N, D)
        f = self.modes(self.latent(z))  # (Q, N, M h)
        t = f[0]
        for q in range(1, self.order):  # rank-1 tensor product across the Q blocks
            t = t * f[q]
        a = t.view(-1, self.n_modes, self.hidden).sum(1)  # (N, h)
        e = self.out_proj(a)  # (N, D)
        return e + self.res_proj(z) if self.res_proj is not None else e

    def param_roles(self) -> dict[str, str]:
        roles = {**super().param_roles(), "seed_proj.weight": "weight", "seed_proj.bias": "bias",
                 "seed_norm.weight": "gain", "seed_norm.bias": "bias", "theta": "coefficients",
                 "out_proj.weight": "weight"}
        if self.res_proj is not None:
            roles["res_proj.weight"] = "weight"
        return roles

    def extra_repr(self) -> str:
        return (f"form=blocks, vocab={self.vocab}, k={self.k}, base={self.base}, "
                f"d_seed={self.d_seed}, M={self.n_modes}, Q={self.order}, G={self.grid_size}, "
                f"degree={self.degree}, h={self.hidden}, residual={self.residual}, "
                f"impl={self.impl}")
