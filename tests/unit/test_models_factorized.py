"""The `factorized` control arm: rank matched to LEV, the Leviathan arm's depth, accounting."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from leviathan.config import ladder_config
from leviathan.models import (
    ConfigError,
    ModelConfig,
    build_model,
    count_params,
    factorized_rank,
    flops_per_token,
    resolve_model_config,
)
from leviathan.models.accounting import lev_params

FORMS = ("blocks", "khronos")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("size", ["60M", "109M", "421M"])
def test_rank_is_the_closest_to_the_lev_generator_of_the_same_form(size, form):
    cfg = ladder_config("v1", size, lev={"form": form}).replace(arm="factorized")
    r, V, D = factorized_rank(cfg), cfg.padded_vocab, cfg.d_model
    target = lev_params(cfg)
    assert count_params(cfg).input == r * (V + D)
    for other in (r - 1, r + 1):
        if other >= 1:
            assert abs(other * (V + D) - target) >= abs(r * (V + D) - target)
    assert abs(r * (V + D) - target) <= (V + D) / 2
    assert 4 <= r <= 12  # ~1.3-1.6M generator parameters over 200,376 + D per rank


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("size", ["60M", "109M", "421M"])
def test_factorized_takes_the_leviathan_depth_and_its_backbone(size, form):
    dense = ladder_config("v1", size, lev={"form": form})
    lev = resolve_model_config(dense.replace(arm="leviathan"))
    fac = resolve_model_config(dense.replace(arm="factorized"))
    assert (fac.n_layers, fac.dense_n_layers) == (lev.n_layers, dense.n_layers)
    assert fac.n_layers > dense.n_layers
    assert fac.factorized.rank == "match" and not fac.replace(
        factorized={"rank": 7}).parameter_matched and fac.parameter_matched
    assert resolve_model_config(fac) == fac  # idempotent
    counts_fac, counts_lev = count_params(fac), count_params(lev)
    assert (counts_fac.body, counts_fac.head) == (counts_lev.body, counts_lev.head)
    assert abs(counts_fac.input - counts_lev.input) <= (fac.padded_vocab + fac.d_model) / 2
    assert abs(counts_fac.total / count_params(dense).total - 1) <= 0.02  # isoparametric too


def test_an_explicit_rank_and_fixed_depth_are_kept():
    cfg = resolve_model_config(ladder_config("v1", "109M").replace(
        arm="factorized", factorized={"rank": 32}, depth_rule="fixed"))
    assert (factorized_rank(cfg), cfg.n_layers) == (32, 8)
    assert count_params(cfg).input == 32 * (200376 + 256)


@pytest.mark.parametrize("form", FORMS)
def test_count_params_equals_the_built_model_for_every_option(form):
    base = dict(arm="factorized", vocab_size=512, vocab_pad_to=None, d_model=64, n_heads=4,
                lev=dict(form=form, d_seed=32, n_modes=4, hidden=32))
    for extra in ({}, {"factorized": {"rank": 5}}, {"factorized": {"rank": "span"}},
                  {"depth_rule": "isoparametric"},
                  {"vocab_pad_multiple": 128, "vocab_size": 500}):
        cfg = ModelConfig(**{**base, **extra})
        model = build_model(cfg, device="meta")
        assert count_params(cfg) == model.param_counts(), extra
        assert model.embed.weight.shape == (cfg.padded_vocab, factorized_rank(cfg))


def test_flops_per_token_adds_the_projection_once_per_position():
    fac = resolve_model_config(ladder_config("v1", "109M").replace(arm="factorized"))
    T, D, L, V, r = 512, fac.d_model, fac.n_layers, fac.padded_vocab, factorized_rank(fac)
    matmul = L * (4 * D * D + 3 * D * fac.ffn_dim) + V * D + r * D
    assert flops_per_token(fac, T) == 6 * matmul + 12 * L * D * T
    dense_on_that_backbone = fac.replace(arm="dense", depth_rule="fixed")
    assert flops_per_token(fac, T) - flops_per_token(dense_on_that_backbone, T) == 6 * r * D


def test_factorized_output_scale_and_fp32_under_autocast():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arm="factorized", vocab_size=512, vocab_pad_to=None,
                                    factorized={"rank": 8}))
    idx = torch.arange(512).view(8, 64)
    e = model.embed(idx)
    assert 0.5 * 0.02 < e.std().item() < 2 * 0.02
    torch.testing.assert_close(model.embed.table()[idx], e)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.embed(idx).dtype == torch.float32


BAD = [
    (dict(arm="lowrank"), r"model.arm='lowrank' is not allowed; allowed values: dense, leviathan, "
                          r"factorized"),
    (dict(arm="factorized", head="tied"),
     r"model.head='tied' is not allowed for model.arm='factorized'; allowed values: untied$"),
    (dict(arm="factorized", head="generator"), r"model.head='generator' .* untied$"),
    (dict(arm="factorized", factorized=dict(rank=0)),
     r"model.factorized.rank: must be match, span or an integer >= 1, got 0"),
    (dict(arm="factorized", factorized=dict(rank="half")),
     r"model.factorized.rank: must be match, span or an integer >= 1, got 'half'"),
    (dict(lev=dict(splines=False, residual=False)),
     r"model.lev.splines=false keeps only the residual path .* model.lev.residual=true"),
    (dict(lev=dict(form="kan")), r"model.lev.form='kan' is not allowed; allowed values: blocks, "
                                 r"khronos"),
    (dict(lev=dict(knots=1)), r"model.lev.knots: must be an integer >= 2"),
    (dict(lev=dict(knot_degree=-1)), r"model.lev.knot_degree: must be an integer >= 0"),
    (dict(lev=dict(rank=0)), r"model.lev.rank: must be an integer >= 1"),
    (dict(lev=dict(heads=0)), r"model.lev.heads: must be an integer >= 1"),
    (dict(lev=dict(delta_std=-0.1)), r"model.lev.delta_std: must be a number >= 0"),
    (dict(lev=dict(latent_temp=0)), r"model.lev.latent_temp: must be a number > 0"),
    (dict(lev=dict(log_product="maybe")), r"model.lev.log_product: .*not a valid bool"),
]


@pytest.mark.parametrize("changes,message", BAD)
def test_bad_arm_and_form_settings_fail_naming_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        build_model({**dataclasses.asdict(ModelConfig()), **changes}, device="meta")


def test_khronos_ignores_the_blocks_only_divisibility_rule():
    cfg = ModelConfig(arm="leviathan", lev=dict(form="khronos", order=3))  # Q unused
    assert cfg.lev.form == "khronos"
    with pytest.raises(ConfigError, match=r"model.lev.order=3 \(Q\) must divide"):
        ModelConfig(arm="leviathan", lev=dict(form="blocks", order=3))
