"""LEV, the Leviathan token generator: an embedding computed from the token id (LEV.md).

    i -> (c_0..c_{k-1}), c_j = floor(i / b^j) mod b                          coordinates
    z = sum_j C_j[c_j]                                     (d_seed)           seed
    e = form(z)                                            (D)                the generator

Two forms of the generator (`model.lev.form`, docs/LEV_FORMS.md): `blocks` (lev_blocks.py, our
concretisation of LEV.md: M modes whose products run over Q blocks of the latent coordinates,
plus the residual W_r z) and `khronos` (lev_khronos.py, the form a public reimplementation
describes: h heads, knot-centred quadratic B-splines, a product over all d_seed coordinates in
the log domain). `LevGenerator(cfg)` builds the configured form; both are LevGenerators and
share everything below. `model.lev.splines=false` builds the ablation of either form that keeps
only the codebooks and the residual path, e = W_r z (lev_codebooks.py).

Numerics: the generator always runs in its parameters' dtype with autocast switched off, so
under any autocast it hands the backbone fp32, like the Dense arm's table lookup (the spline
bases and mode products are computed in fp32 too; issue 11).

Efficiency: `forward` evaluates LEV once per distinct id of the batch (torch.unique), and in
eval mode without autograd looks rows up in the whole table, materialised once and cached. The
cache keeps a snapshot of the LEV parameters it was computed from and is used only while every
parameter is still exactly equal to it (torch.equal, a few MB: version counters are not enough,
fused AdamW and writes through `.data` do not bump them). It is also dropped on train()/eval()
switches, .to() and load_state_dict.
"""

from __future__ import annotations

from leviathan.models.lev_base import LevGenerator, token_coordinates
from leviathan.models.lev_blocks import BlocksLev
from leviathan.models.lev_codebooks import CodebookLev
from leviathan.models.lev_khronos import KhronosLev

__all__ = ["BlocksLev", "CodebookLev", "KhronosLev", "LevGenerator", "token_coordinates"]
