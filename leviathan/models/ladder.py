"""The named sizes: v1 (named by Dense `untied` total parameters) and v2 (by Dense `tied` totals).

Shapes only; everything else comes from the model defaults (o200k_base padded to 200,376, the
paper's LEV settings). conf/model/<ladder>/<size>.yaml are the Hydra faces of these entries;
tests check that they agree and that each Dense size is within 5% of its name. Every head is
64 wide in v1 and 64-128 wide in v2; ffn_hidden = round_up(8/3 d_model, 64).
The v1 Leviathan depths (isoparametric) are 3.9x (60M) down to 2.4x (421M) the Dense depths;
109M at 8 layers gives 8.75x, the paper's top multiple.
"""

from __future__ import annotations

LADDER_SIZES: dict[str, dict[str, dict[str, int]]] = {
    "v1": {  # Dense head untied; the isoparametric family (Leviathan depth solved)
        "60M": dict(d_model=128, n_layers=40, n_heads=2, ffn_hidden=384),
        "109M": dict(d_model=256, n_layers=8, n_heads=4, ffn_hidden=704),
        "164M": dict(d_model=384, n_layers=6, n_heads=6, ffn_hidden=1024),
        "231M": dict(d_model=512, n_layers=8, n_heads=8, ffn_hidden=1408),
        "296M": dict(d_model=640, n_layers=8, n_heads=10, ffn_hidden=1728),
        "421M": dict(d_model=768, n_layers=16, n_heads=12, ffn_hidden=2048),
    },
    "v2": {  # Dense head tied vs Leviathan untied, identical backbone (the decoupled family)
        "200M": dict(d_model=640, n_layers=14, n_heads=10, ffn_hidden=1728),
        "400M": dict(d_model=1024, n_layers=16, n_heads=16, ffn_hidden=2752),
        "700M": dict(d_model=1536, n_layers=14, n_heads=12, ffn_hidden=4096),
        "1.2B": dict(d_model=2048, n_layers=16, n_heads=16, ffn_hidden=5504),
    },
}

LADDER_DEFAULTS: dict[str, dict[str, str]] = {  # per-ladder settings besides the shape
    "v1": dict(head="untied", depth_rule="isoparametric", iso_dense_head="untied"),
    "v2": dict(head="tied", depth_rule="fixed", iso_dense_head="tied"),
}


def size_in_params(name: str) -> float:
    """'109M' -> 109e6, '1.2B' -> 1.2e9."""
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}[name[-1].upper()]
    return float(name[:-1]) * scale


def ladder_config(ladder: str, size: str, **overrides):
    """The ModelConfig of a named size (Dense arm unless overridden)."""
    from leviathan.models.config import ModelConfig

    return ModelConfig(ladder=ladder, size=size, **LADDER_SIZES[ladder][size],
                       **{**LADDER_DEFAULTS[ladder], **overrides})
