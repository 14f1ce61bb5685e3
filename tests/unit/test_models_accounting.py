"""Parameter accounting, the ladder, the isoparametric rule, Hydra composition, config errors."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import REPO
from omegaconf import OmegaConf

from leviathan.config import compose, ladder_config
from leviathan.models import (
    ConfigError,
    ModelConfig,
    build_model,
    check_tokenizer_vocab,
    count_params,
    flops_per_token,
    isoparametric_depth,
    ladder_sizes,
    resolve_model_config,
)
from leviathan.models.accounting import block_params, lev_params
from leviathan.models.ladder import size_in_params

CONF = REPO / "conf"
NAMED = [f"{lad}/{size}" for lad in ("v1", "v2") for size in ladder_sizes(lad)]
EXTRA = sorted(  # every other option of the `model` group (debug, bench, smoke sizes, ...)
    str(f.relative_to(CONF / "model").with_suffix("")) for f in (CONF / "model").rglob("*.yaml")
    if str(f.relative_to(CONF / "model").with_suffix("")) not in NAMED)


@pytest.fixture(scope="module")
def composed():
    """model name -> composed `model` node, through Hydra with the real conf/ directory."""
    out = {name: compose("train", [f"model={name}"]).model for name in NAMED + EXTRA}
    out["v1/109M:leviathan"] = compose("train", ["model=v1/109M", "model.arm=leviathan"]).model
    return out


def arm_configs(model_cfg):
    """Every (arm, head, form) this size is meant for: Dense with either head, Leviathan untied
    in both LEV forms, the factorized control matched to either form (solved depth included)."""
    c = resolve_model_config(model_cfg)
    dense = c.replace(arm="dense")
    other = c.replace(arm="dense", head="tied" if c.head == "untied" else "untied")
    out = [dense, other]
    for form in ("blocks", "khronos"):
        lev = c.replace(lev={"form": form})
        out += [resolve_model_config(lev.replace(arm="leviathan", head="untied")),
                resolve_model_config(lev.replace(arm="factorized", head="untied"))]
        if c.ladder not in ("v1", "v2"):
            out.append(lev.replace(arm="leviathan", head="generator"))
    return out


@pytest.mark.parametrize("name", NAMED + EXTRA)
def test_count_params_equals_the_built_model(composed, name):
    for cfg in arm_configs(composed[name]):
        model = build_model(cfg, device="meta")
        counted = count_params(cfg)
        measured = model.param_counts()
        assert counted == measured, (cfg.arm, cfg.head, cfg.lev.form)
        assert counted.total == sum(p.numel() for p in model.parameters())
        assert counted.total == counted.input + counted.head + counted.body
        assert counted.as_dict() == dataclasses.asdict(counted)


def test_lev_parameter_formula_of_lev_md():
    """k b d_seed + d_seed^2 + 3 d_seed + M d_seed n_b h + h D + d_seed D; ~1.6M at D = 512."""
    cfg = ModelConfig(arm="leviathan", d_model=512, n_heads=8)
    k, b, ds, M, nb, h, D = 3, 59, 128, 8, 11, 128, 512
    expected = k * b * ds + ds * ds + 3 * ds + M * ds * nb * h + h * D + ds * D
    assert lev_params(cfg) == expected == count_params(cfg).input
    assert 1.5e6 < expected < 1.7e6
    assert count_params(cfg.replace(arm="dense")).input == 200376 * 512  # 102.6M


def test_khronos_parameter_formula():
    """k b d_seed + H (d_seed^2 + 2 d_seed + d_seed kappa r) + H r D at the paper's settings."""
    cfg = ModelConfig(arm="leviathan", d_model=512, n_heads=8, lev=dict(form="khronos"))
    k, b, ds, H, kappa, r, D = 3, 59, 128, 8, 16, 64, 512
    expected = k * b * ds + H * (ds * ds + 2 * ds + ds * kappa * r) + H * r * D
    assert lev_params(cfg) == expected == count_params(cfg).input == 1_466_496
    model = build_model(cfg.replace(n_layers=1), device="meta")
    assert sum(p.numel() for p in model.embed.parameters()) == expected


@pytest.mark.parametrize("name", NAMED)
def test_dense_size_within_5_percent_of_its_name(composed, name):
    ladder, size = name.split("/")
    cfg = resolve_model_config(composed[name])
    assert cfg.arm == "dense" and cfg.head == ("untied" if ladder == "v1" else "tied")
    assert cfg.padded_vocab == 200376 and cfg.vocab_size == 200019
    total = count_params(cfg).total
    assert abs(total / size_in_params(size) - 1) <= 0.05, (name, total)


@pytest.mark.parametrize("size", ladder_sizes("v1"))
def test_v1_isoparametric_pairs_within_2_percent(size):
    dense = ladder_config("v1", size)
    lev = resolve_model_config(dense.replace(arm="leviathan"))
    n_dense, n_lev = count_params(dense).total, count_params(lev).total
    assert abs(n_lev / n_dense - 1) <= 0.02
    assert lev.dense_n_layers == dense.n_layers and lev.n_layers == isoparametric_depth(dense)
    multiple = lev.n_layers / dense.n_layers
    assert 1.0 < multiple < 9.0
    if size_in_params(size) <= 421e6:  # the paper's sizes: 2.3-8.7x (752M, 989M: Dense rungs)
        assert multiple > 2.0, multiple
    for other in (lev.n_layers - 1, lev.n_layers + 1):  # the closest depth
        n_other = count_params(lev.replace(n_layers=other, depth_rule="fixed")).total
        assert abs(n_other - n_dense) >= abs(n_lev - n_dense)
    assert resolve_model_config(lev) == lev  # idempotent
    assert count_params(dense.replace(arm="leviathan")) == count_params(lev)


def test_isoparametric_depth_uses_the_configured_lev_form():
    depths = {}
    for size in ladder_sizes("v1"):
        for form in ("blocks", "khronos"):
            dense = ladder_config("v1", size, lev={"form": form})
            lev = resolve_model_config(dense.replace(arm="leviathan"))
            n_dense, n_lev = count_params(dense).total, count_params(lev).total
            assert abs(n_lev / n_dense - 1) <= 0.02, (size, form)
            for other in (lev.n_layers - 1, lev.n_layers + 1):  # closest with this form's count
                n_other = count_params(lev.replace(n_layers=other, depth_rule="fixed")).total
                assert abs(n_other - n_dense) >= abs(n_lev - n_dense), (size, form)
            depths[size, form] = lev.n_layers
    assert any(depths[s, "blocks"] != depths[s, "khronos"] for s in ladder_sizes("v1")), depths


def test_v2_leviathan_is_slightly_larger_than_tied_dense():
    for size in ladder_sizes("v2"):
        dense = ladder_config("v2", size)
        lev = resolve_model_config(dense.replace(arm="leviathan", head="untied"))
        assert lev.n_layers == dense.n_layers  # identical backbone (depth_rule fixed)
        ratio = count_params(lev).total / count_params(dense).total
        assert 1.001 < ratio < 1.01


def test_ladder_config_is_the_composed_size(composed):
    """The sizes live in conf/model/ only: ladder_config composes them."""
    for name in NAMED:
        ladder, size = name.split("/")
        assert to_plain(composed[name]) == dataclasses.asdict(ladder_config(ladder, size))
    lev = composed["v1/109M:leviathan"]
    assert lev.arm == "leviathan" and resolve_model_config(lev).n_layers == 70


def to_plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def test_debug_and_bench_models(composed, tiktoken_cache):
    import tiktoken

    n_vocab = tiktoken.get_encoding("o200k_base").n_vocab
    assert n_vocab == 200019
    debug = resolve_model_config(composed["debug"])
    assert (debug.n_layers, debug.d_model, debug.max_seq_len) == (2, 64, 64)
    check_tokenizer_vocab(debug, n_vocab, tokenizer="o200k_base")
    small = resolve_model_config(composed["debug_small"])  # the debug_2k vocabulary
    assert small.padded_vocab == 2048 and small.lev_base == 13
    with pytest.raises(ConfigError, match=r"model.vocab_size=2048 .* 200019 ids of o200k_base"):
        check_tokenizer_vocab(small, n_vocab, tokenizer="o200k_base")
    bench = resolve_model_config(composed["bench"])
    assert (bench.d_model, bench.n_layers, bench.padded_vocab) == (256, 4, 200376)


def test_flops_per_token_from_structure():
    cfg = ladder_config("v1", "109M")
    D, L, V, T = 256, 8, 200376, 512
    matmul = L * (4 * D * D + 3 * D * 704) + V * D
    assert flops_per_token(cfg, T) == 6 * matmul + 12 * L * D * T
    lev = resolve_model_config(cfg.replace(arm="leviathan"))
    lev_flops = flops_per_token(lev, T)
    body = 6 * lev.n_layers * (block_params(lev) - 2 * D)
    assert body + 6 * V * D < lev_flops < body + 6 * V * D + 6 * 2e6 + 12 * lev.n_layers * D * T
    assert flops_per_token(cfg, 1024) > flops_per_token(cfg, 512)
    with pytest.raises(ValueError):
        flops_per_token(cfg, 0)


BAD = [
    (dict(arm="sparse"), r"model.arm='sparse' is not allowed; allowed values: dense, leviathan"),
    (dict(head="shared"), r"model.head='shared' .* allowed values: tied, untied"),
    (dict(arm="leviathan", head="tied"),
     r"model.head='tied' is not allowed for model.arm='leviathan'; allowed values: untied, gen"),
    (dict(ladder="v1", size="999M"), r"model.size='999M' .* allowed values: 60M, 109M"),
    (dict(ladder="v3"), r"model.ladder='v3' .* allowed values: v1, v2"),
    (dict(depth_rule="magic"), r"model.depth_rule='magic' .* fixed, isoparametric"),
    (dict(d_model=100, n_heads=3), r"model.d_model=100 must be divisible by model.n_heads=3"),
    (dict(d_model=0), r"model.d_model: must be an integer >= 1"),
    (dict(n_layers=-1), r"model.n_layers: must be an integer >= 1"),
    (dict(vocab_pad_to=1000), r"model.vocab_pad_to=1000 must be >= model.vocab_size=200019"),
    (dict(lev=dict(order=3)), r"model.lev.order=3 \(Q\) must divide model.lev.d_seed=128"),
    (dict(lev=dict(base=50)), r"model.lev.base=50: base\*\*k = 50\*\*3 = 125000 must be >= "
                              r"the padded vocabulary 200376"),
    (dict(lev=dict(impl="cuda")), r"model.lev.impl='cuda' .* matmul, bag"),
    (dict(lev=dict(hidden=0)), r"model.lev.hidden: must be an integer >= 1"),
    (dict(lev=dict(k=2, base=None), vocab_size=10, vocab_pad_to=None, ffn_hidden=-4),
     r"model.ffn_hidden: must be null or an integer >= 1"),
]


@pytest.mark.parametrize("changes,message", BAD)
def test_bad_configs_fail_naming_the_key(changes, message):
    base = OmegaConf.structured(ModelConfig)
    cfg = OmegaConf.merge(base, OmegaConf.create(changes)) if "lev" in changes else None
    with pytest.raises(ConfigError, match=message):
        if cfg is not None:
            build_model(cfg)  # through a DictConfig
        else:
            build_model({**dataclasses.asdict(ModelConfig()), **changes})  # through a dict


def test_unknown_keys_and_hydra_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"model.widht: unknown key; allowed keys: .*d_model"):
        count_params({"widht": 3})
    with pytest.raises(ConfigError, match=r"model.lev.modes: unknown key; allowed keys: .*rank"):
        resolve_model_config({"lev": {"modes": 3}})
    with pytest.raises(Exception, match=r"(?s)v1/999M.*Available options"):
        compose("train", ["model=v1/999M"])


def test_model_group_composes_from_the_train_primary_config():
    cfg = compose("train", ["model=v1/109M", "model.arm=leviathan"])
    default = compose("train").model
    lev = resolve_model_config(cfg.model)
    assert (lev.arm, lev.size, lev.d_model, lev.dense_n_layers, lev.n_layers) == (
        "leviathan", "109M", 256, 8, 70)
    assert abs(count_params(lev).total / 109e6 - 1) < 0.02
    assert resolve_model_config(default).size == "debug"
