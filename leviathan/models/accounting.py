"""Exact parameter accounting, FLOPs per token and the isoparametric depth rule — no model built.

The counts mirror the modules one for one (tests compare them with sum(p.numel()) of the built
model, on the meta device, for every named size and both arms):

    Dense input    V_pad D                                    (the tied head reuses it: head 0)
    LEV input      k b d_seed                 codebooks C_0..C_{k-1}           (both forms)
      splines=false + d_seed D                W_r only (the ablation, either form)
      blocks       + d_seed^2 + d_seed        W_s, beta_s
                   + 2 d_seed                 LayerNorm gain and bias
                   + d_seed n_b M h           Theta
                   + h D  [+ d_seed D]        W_o [+ W_r, the residual path]
      khronos      + H d_seed^2               W_seed,1..H          (H = lev.heads)
                   + 2 H d_seed               LayerNorm_l gains and biases
                   + H d_seed kappa r         S_l (or Delta_l)
                   + H r D                    W_out,1..H
    factorized     r (V_pad + D)              T and P; r = model.factorized.rank: an integer,
                                              match: the r whose count is closest to the LEV
                                              input's, span: min(D, LEV's rank bound)
    head           V_pad D (untied), 0 (tied, generator)
    body           L (4 D^2 + 3 D F + 2 D) + D    blocks (QKV, out, SwiGLU, two gains) + final norm
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from leviathan.models.config import ModelConfig, to_model_config


@dataclass(frozen=True)
class ParamCounts:
    total: int  # every trainable parameter, shared ones once
    input: int  # the input representation: embedding table or LEV generator
    head: int  # the output head's own parameters (0 when tied / generator)
    body: int  # transformer blocks + final norm ("non-embedding")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def block_params(cfg: ModelConfig) -> int:
    D, Fh = cfg.d_model, cfg.ffn_dim
    return 4 * D * D + 3 * D * Fh + 2 * D


def lev_params(cfg: ModelConfig) -> int:
    """Parameters of the LEV generator this config describes (its form), whatever the arm."""
    lev, D = cfg.lev, cfg.d_model
    ds = lev.d_seed
    n = lev.k * cfg.lev_base * ds  # codebooks
    if not lev.splines:  # the ablation: e = W_r z
        return n + ds * D
    if lev.form == "khronos":
        H = lev.heads
        return n + H * (ds * ds + 2 * ds + ds * lev.knots * lev.rank) + H * lev.rank * D
    n += ds * ds + 3 * ds + ds * lev.n_basis * lev.n_modes * lev.hidden
    return n + lev.hidden * D + (ds * D if lev.residual else 0)


def lev_rank_bound(cfg: ModelConfig) -> int:
    """The most dimensions the rows of LEV's table (V_pad x D) can span: e = W_o a + W_r z has
    a in R^h and z in R^d_seed (blocks: h + d_seed, h without the residual; splines=false:
    d_seed); khronos: e = sum_l M_l W_out,l, h heads of r modes (h r); never more than D."""
    lev = cfg.lev
    if not lev.splines:
        bound = lev.d_seed
    elif lev.form == "khronos":
        bound = lev.heads * lev.rank
    else:
        bound = lev.hidden + (lev.d_seed if lev.residual else 0)
    return min(cfg.d_model, bound)


def factorized_rank(cfg: ModelConfig) -> int:
    """r of the factorized arm (model.factorized.rank): an integer as given; span: the rank of
    LEV's table at most (lev_rank_bound); match: the r >= 1 whose r (V_pad + D) is closest to
    lev_params(cfg) (the LEV generator of the same config and form; ties: smaller)."""
    rank = cfg.factorized.rank
    if rank == "span":
        return lev_rank_bound(cfg)
    if rank != "match":
        return int(rank)
    per_rank, target = cfg.padded_vocab + cfg.d_model, lev_params(cfg)
    low = max(1, target // per_rank)
    return min((low, low + 1), key=lambda r: (abs(r * per_rank - target), r))


def _counts(cfg: ModelConfig) -> ParamCounts:
    V, D = cfg.padded_vocab, cfg.d_model
    if cfg.arm == "dense":
        inp = V * D
    elif cfg.arm == "factorized":
        inp = factorized_rank(cfg) * (V + D)
    else:
        inp = lev_params(cfg)
    head = V * D if cfg.head == "untied" else 0
    body = cfg.n_layers * block_params(cfg) + D
    return ParamCounts(total=inp + head + body, input=inp, head=head, body=body)


def count_params(cfg: Any) -> ParamCounts:
    """Parameter breakdown of build_model(cfg), computed from the config alone."""
    return _counts(resolve_model_config(cfg))


def isoparametric_depth(cfg: Any) -> int:
    """The Leviathan depth whose total parameters are closest to the Dense model of this size.

    The Dense reference is this config with arm=dense, head=model.iso_dense_head and the Dense
    depth (model.dense_n_layers once resolved, else model.n_layers). The Leviathan model is
    this config's LEV (its form, always with its splines: the ablation lev.splines=false keeps
    the full generator's depth) with its head (untied unless arm=leviathan says otherwise);
    arm=factorized takes this same depth (it is the Leviathan arm's backbone).
    """
    c = to_model_config(cfg)
    dense_depth = c.dense_n_layers or c.n_layers
    dense = c.replace(arm="dense", head=c.iso_dense_head, n_layers=dense_depth,
                      depth_rule="fixed", dense_n_layers=None)
    target = _counts(dense).total
    lev = c.replace(arm="leviathan", head=c.head if c.arm == "leviathan" else "untied",
                    n_layers=1, depth_rule="fixed", dense_n_layers=None, lev={"splines": True})
    per_block = block_params(lev)
    fixed = _counts(lev).total - per_block  # everything but the blocks
    guess = max(1, round((target - fixed) / per_block))
    candidates = [d for d in (guess - 1, guess, guess + 1) if d >= 1]
    return min(candidates, key=lambda d: (abs(fixed + d * per_block - target), d))


def resolve_model_config(cfg: Any) -> ModelConfig:
    """A validated ModelConfig; with depth_rule=isoparametric, arm=leviathan gets its solved
    n_layers (and dense_n_layers records the Dense depth it matched), and so does
    arm=factorized (the same depth). model.factorized.rank stays as given (match / span say how
    the arm was sized; factorized_rank(cfg) is its r). Idempotent."""
    c = to_model_config(cfg)
    if c.depth_rule == "isoparametric" and c.arm in ("leviathan", "factorized"):
        dense_depth = c.dense_n_layers or c.n_layers
        c = c.replace(n_layers=isoparametric_depth(c), dense_n_layers=dense_depth)
    return c


def lev_macs_per_id(cfg: ModelConfig) -> int:
    """Multiply-accumulates of one LEV evaluation (matmul impl: the dense basis; bag: its p + 1
    non-zeros). khronos: seed projections, basis x S, the product over d_seed, W_out."""
    lev, D = cfg.lev, cfg.d_model
    ds = lev.d_seed
    if not lev.splines:
        return ds * D
    if lev.form == "khronos":
        basis = lev.knots if lev.impl == "matmul" else lev.knot_degree + 1
        return lev.heads * (ds * ds + ds * basis * lev.rank + ds * lev.rank + lev.rank * D)
    basis = lev.n_basis if lev.impl == "matmul" else lev.degree + 1
    macs = ds * ds + ds * basis * lev.n_modes * lev.hidden + lev.hidden * D
    macs += lev.n_modes * lev.hidden * lev.order  # mode products and the sum over modes
    return macs + (ds * D if lev.residual else 0)


def flops_per_token(cfg: Any, seq_len: int, *, tokens_per_forward: int | None = None) -> float:
    """Training FLOPs per token (forward + backward) from the model's structure.

    6 x (matmul multiply-accumulates per token) + attention 12 L D T (QK^T and AV, forward and
    backward, PaLM's convention: the full T x T score matrix, causal masking not subtracted).
    The Dense lookup costs nothing; the factorized arm's r x D projection counts once per
    position. LEV is counted once per position although training evaluates it once per distinct
    id of the batch (so this is an upper bound for Leviathan; recomputation not counted). The
    generator head regenerates all V_pad rows per forward: that cost is added per token only
    when tokens_per_forward is given.
    """
    c = resolve_model_config(cfg)
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    V, D, L = c.padded_vocab, c.d_model, c.n_layers
    macs = L * (4 * D * D + 3 * D * c.ffn_dim) + V * D  # blocks + head (any head type)
    if c.arm == "factorized":
        macs += factorized_rank(c) * D
    if c.arm == "leviathan":
        macs += lev_macs_per_id(c)
        if c.head == "generator" and tokens_per_forward:
            macs += V * lev_macs_per_id(c) / tokens_per_forward
    return 6.0 * macs + 12.0 * L * D * seq_len
