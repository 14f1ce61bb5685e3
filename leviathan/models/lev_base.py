"""The shell both LEV forms share (lev.py explains LEV and its forms): codebooks, the seed, the
three evaluation paths and the table cache. A form subclasses LevGenerator with `form = "<name>"`
and registers itself; `LevGenerator(cfg)` then builds the form cfg.lev.form names, or, with
cfg.lev.splines=false, the ablation that keeps only the codebooks and W_r (lev_codebooks.py, a
subclass declared with `splines=False`) whatever the form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leviathan.models.config import ModelConfig


def token_coordinates(ids: torch.Tensor, base: int, k: int) -> torch.Tensor:
    """ids (...) -> coordinates (..., k), c_j = floor(i / b^j) mod b."""
    powers = base ** torch.arange(k, device=ids.device, dtype=torch.long)  # (k,)
    return torch.div(ids.long().unsqueeze(-1), powers, rounding_mode="floor") % base


def _after_load(module: LevGenerator, _keys) -> None:
    module.invalidate_cache()


class LevGenerator(nn.Module):
    """The shared shell of both forms: codebooks, seed, the three evaluation paths, the cache.

    A form subclass defines its parameters, `reset_parameters`, `embed_seed(z) -> e` and
    `param_roles`. `LevGenerator(cfg)` returns the subclass that cfg.lev.form names.
    """

    forms: dict[str, type[LevGenerator]] = {}  # lev.form -> subclass (filled as they are defined)
    without_splines: type[LevGenerator] | None = None  # lev.splines=false: the ablation
    form: str = ""

    def __init_subclass__(cls, splines: bool = True, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not splines:
            LevGenerator.without_splines = cls
        elif cls.form:
            LevGenerator.forms[cls.form] = cls

    def __new__(cls, cfg: ModelConfig | None = None, *args, **kwargs):
        if cls is LevGenerator:
            cls = (LevGenerator.forms[cfg.lev.form] if cfg.lev.splines
                   else LevGenerator.without_splines)
        return super().__new__(cls)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        lev = cfg.lev
        self.form = lev.form
        self.vocab, self.d_model, self.init_std = cfg.padded_vocab, cfg.d_model, cfg.init_std
        self.k, self.base, self.d_seed = lev.k, cfg.lev_base, lev.d_seed
        self.impl, self.table_chunk = lev.impl, lev.table_chunk
        self.codebooks = nn.Embedding(self.k * self.base, self.d_seed)  # C_0..C_{k-1} (k b, ds)
        self.register_buffer("offsets", torch.arange(self.k) * self.base, persistent=False)
        self._table: torch.Tensor | None = None  # (V_pad, D) cached eval table
        self._table_key: list[torch.Tensor] | None = None  # parameter snapshot
        self._compiled = None  # compile_regions(): the generator under torch.compile
        self.register_load_state_dict_post_hook(_after_load)  # a function: the module pickles

    def reset_offsets(self) -> None:  # the buffer, after a meta build + to_empty
        with torch.no_grad():
            self.offsets.copy_(torch.arange(self.k, device=self.offsets.device) * self.base)

    # ---- the generator --------------------------------------------------------------------
    def coordinates(self, ids: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, k)
        return token_coordinates(ids, self.base, self.k)

    def seed(self, ids: torch.Tensor) -> torch.Tensor:  # (N,) -> z (N, ds)
        rows = self.coordinates(ids) + self.offsets  # (N, k) rows of the stacked codebooks
        return F.embedding_bag(rows, self.codebooks.weight, mode="sum")

    def embed_seed(self, z: torch.Tensor) -> torch.Tensor:  # (N, ds) -> e (N, D)
        raise NotImplementedError

    def generate(self, ids: torch.Tensor) -> torch.Tensor:
        """LEV evaluated at every given id: ids (N,) -> e (N, D), in the parameters' dtype
        whatever autocast is active (fp32 for an fp32 model, as the Dense lookup)."""
        if self._compiled is not None:
            return self._compiled(ids)
        return self._generate(ids)

    def _generate(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.offsets.device.type, enabled=False):
            return self.embed_seed(self.seed(ids))

    def compile_regions(self, **options) -> None:
        """torch.compile the generator (seed + form: one graph, no break) with the number of
        ids symbolic (dynamic=True): the count of distinct ids changes every step, and one
        graph serves every count without recompiling. torch.unique, whose output size depends
        on the data, stays eager in front of it (embed_unique)."""
        self._compiled = torch.compile(self._generate, dynamic=True, **options)

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
            key = [p.detach().clone() for p in self.parameters()]
            self._table, self._table_key = self.full_table(), key
        return self._table

    def invalidate_cache(self) -> None:
        self._table, self._table_key = None, None

    def _cache_fresh(self) -> bool:  # parameters exactly as when the table was computed
        snapshot, params = self._table_key, list(self.parameters())
        return (len(params) == len(snapshot)
                and all(p.shape == s.shape and p.dtype == s.dtype and p.device == s.device
                        and torch.equal(p, s) for p, s in zip(params, snapshot, strict=True)))

    def train(self, mode: bool = True) -> LevGenerator:
        self.invalidate_cache()
        return super().train(mode)

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half(): parameters move
        self.invalidate_cache()
        return super()._apply(fn, recurse)

    # ---- optimisation -----------------------------------------------------------------------
    def param_roles(self) -> dict[str, str]:
        """Local parameter name -> role (leviathan/models/roles.py): the codebooks are tables."""
        return {"codebooks.weight": "table"}
