"""LEV, the Leviathan token generator: an embedding computed from the token id (LEV.md).

    i -> (c_0..c_{k-1}), c_j = floor(i / b^j) mod b                          coordinates
    z = sum_j C_j[c_j]                                     (d_seed)           seed
    x = sigmoid(LayerNorm(W_s z + beta_s))                 (d_seed) in (0,1)  latent coordinate
    f_{m,q} = sum_{r in R_q} Theta_{m,r}^T phi(x_r)        (h)                Q blocks R_q
    a = sum_m prod_q f_{m,q}                               (h)                M separable modes
    e = W_o a + W_r z                                      (D)                output (+ residual)

phi is the cubic B-spline basis with local support (bspline.py). Theta is stored as one tensor
(d_seed, n_b, M, h): Theta[r, :, m, :] = Theta_{m,r}. Because the Q blocks are contiguous, its
view (Q, R n_b, M h) turns all M x Q mode functions into one batched matmul per block.

Efficiency: `forward` evaluates LEV once per distinct id of the batch (torch.unique), and in
eval mode without autograd looks rows up in the whole table, materialised once and cached. The
cache keeps a snapshot of the LEV parameters it was computed from and is used only while every
parameter is still exactly equal to it (torch.equal, a few MB: version counters are not enough,
fused AdamW and writes through `.data` do not bump them) and the autocast state is unchanged.
It is also dropped on train()/eval() switches, .to() and load_state_dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from leviathan.models.bspline import dense_basis, local_basis
from leviathan.models.config import ModelConfig


def token_coordinates(ids: torch.Tensor, base: int, k: int) -> torch.Tensor:
    """ids (...) -> coordinates (..., k), c_j = floor(i / b^j) mod b."""
    powers = base ** torch.arange(k, device=ids.device, dtype=torch.long)  # (k,)
    return torch.div(ids.long().unsqueeze(-1), powers, rounding_mode="floor") % base


class LevGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        lev = cfg.lev
        self.vocab, self.d_model, self.init_std = cfg.padded_vocab, cfg.d_model, cfg.init_std
        self.k, self.base = lev.k, cfg.lev_base
        self.d_seed, self.n_modes, self.order, self.hidden = (lev.d_seed, lev.n_modes, lev.order,
                                                              lev.hidden)
        self.grid_size, self.degree, self.n_basis = lev.grid_size, lev.degree, lev.n_basis
        self.residual, self.impl, self.table_chunk = lev.residual, lev.impl, lev.table_chunk
        ds = self.d_seed
        self.codebooks = nn.Embedding(self.k * self.base, ds)  # C_0..C_{k-1} stacked (k b, ds)
        self.seed_proj = nn.Linear(ds, ds, bias=True)  # W_s, beta_s
        self.seed_norm = nn.LayerNorm(ds, eps=cfg.norm_eps)  # gain and bias
        # Theta[r, :, m, :] = Theta_{m,r} (n_b x h)
        self.theta = nn.Parameter(torch.empty(ds, self.n_basis, self.n_modes, self.hidden))
        self.out_proj = nn.Linear(self.hidden, cfg.d_model, bias=False)  # W_o
        self.res_proj = nn.Linear(ds, cfg.d_model, bias=False) if self.residual else None  # W_r
        self.register_buffer("offsets", torch.arange(self.k) * self.base, persistent=False)
        self._table: torch.Tensor | None = None  # (V_pad, D) cached eval table
        self._table_key: tuple | None = None  # (autocast state, parameter snapshot)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.invalidate_cache())
        if self.theta.device.type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """z and every f_{m,q} start with unit variance, e with std init_std."""
        nn.init.normal_(self.codebooks.weight, std=1.0 / math.sqrt(self.k))
        nn.init.normal_(self.seed_proj.weight, std=1.0 / math.sqrt(self.d_seed))
        nn.init.zeros_(self.seed_proj.bias)
        self.seed_norm.reset_parameters()
        with torch.no_grad():
            self.offsets.copy_(torch.arange(self.k, device=self.offsets.device) * self.base)
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

    # ---- the generator --------------------------------------------------------------------
    def coordinates(self, ids: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, k)
        return token_coordinates(ids, self.base, self.k)

    def seed(self, ids: torch.Tensor) -> torch.Tensor:  # (N,) -> z (N, ds)
        rows = self.coordinates(ids) + self.offsets  # (N, k) rows of the stacked codebooks
        return F.embedding_bag(rows, self.codebooks.weight, mode="sum")

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

    def generate(self, ids: torch.Tensor) -> torch.Tensor:
        """LEV evaluated at every given id: ids (N,) -> e (N, D)."""
        z = self.seed(ids)  # (N, ds)
        f = self.modes(self.latent(z))  # (Q, N, M h)
        t = f[0]
        for q in range(1, self.order):  # rank-1 tensor product across the Q blocks
            t = t * f[q]
        a = t.view(-1, self.n_modes, self.hidden).sum(1)  # (N, h)
        e = self.out_proj(a)  # (N, D)
        return e + self.res_proj(z) if self.res_proj is not None else e

    # ---- the three evaluation paths ---------------------------------------------------------
    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, D)
        if self.use_table():
            return F.embedding(ids, self.table())
        return self.embed_unique(ids)

    def use_table(self) -> bool:
        """Eval mode and no gradient wanted: look rows up in the cached table."""
        return not self.training and not torch.is_grad_enabled()

    def embed_unique(self, ids: torch.Tensor) -> torch.Tensor:  # once per distinct id
        uniq, inverse = torch.unique(ids, return_inverse=True)  # (U,), ids.shape
        return F.embedding(inverse, self.generate(uniq))

    def embed_positions(self, ids: torch.Tensor) -> torch.Tensor:  # once per position (reference)
        return self.generate(ids.reshape(-1)).view(*ids.shape, self.d_model)

    def full_table(self) -> torch.Tensor:
        """LEV(0..V_pad-1) (V_pad, D), freshly computed (chunked when autograd is off)."""
        ids = torch.arange(self.vocab, device=self.offsets.device)
        if torch.is_grad_enabled():
            return self.generate(ids)
        return torch.cat([self.generate(c) for c in ids.split(self.table_chunk)])

    def table(self) -> torch.Tensor:
        """The whole table, cached while no parameter changes (only without autograd)."""
        if torch.is_grad_enabled():
            return self.full_table()
        if self._table is None or not self._cache_fresh():
            self._table, self._table_key = None, None  # free the stale table first
            key = (self._autocast_state(), [p.detach().clone() for p in self.parameters()])
            self._table, self._table_key = self.full_table(), key
        return self._table

    def invalidate_cache(self) -> None:
        self._table, self._table_key = None, None

    def _autocast_state(self) -> tuple:
        dev = self.offsets.device.type
        on = torch.is_autocast_enabled(dev)
        return on, torch.get_autocast_dtype(dev) if on else None

    def _cache_fresh(self) -> bool:  # parameters exactly as when the table was computed
        autocast, snapshot = self._table_key
        params = list(self.parameters())
        return (autocast == self._autocast_state() and len(params) == len(snapshot)
                and all(p.shape == s.shape and p.dtype == s.dtype and p.device == s.device
                        and torch.equal(p, s) for p, s in zip(params, snapshot, strict=True)))

    def train(self, mode: bool = True) -> LevGenerator:
        self.invalidate_cache()
        return super().train(mode)

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half(): parameters move
        self.invalidate_cache()
        return super()._apply(fn, recurse)

    def lookup_tables(self) -> list[nn.Parameter]:  # codebooks: never weight-decayed
        return [self.codebooks.weight]

    def extra_repr(self) -> str:
        return (f"vocab={self.vocab}, k={self.k}, base={self.base}, d_seed={self.d_seed}, "
                f"M={self.n_modes}, Q={self.order}, G={self.grid_size}, degree={self.degree}, "
                f"h={self.hidden}, residual={self.residual}, impl={self.impl}")
