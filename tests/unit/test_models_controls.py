"""The controls that isolate the generator (issue 24.6): the factorized arm at a fixed rank
(`model.factorized.rank: match | span | <int>`) and LEV without its splines
(`model.lev.splines=false`: codebooks + W_r only) in both forms. Each builds, counts its
parameters exactly, trains a step under bf16 autocast and compiles without graph breaks."""

from __future__ import annotations

import math

import pytest
import torch

from leviathan.config import ladder_config
from leviathan.models import ModelConfig, build_model, count_params, resolve_model_config
from leviathan.models.accounting import (
    factorized_rank,
    flops_per_token,
    lev_params,
    lev_rank_bound,
)
from leviathan.models.lev_codebooks import CodebookLev
from leviathan.training.config import TrainerConfig
from leviathan.training.step import TrainStep

SMALL = dict(vocab_size=500, vocab_pad_to=512, d_model=64, n_heads=4, n_layers=2,
             max_seq_len=32)
LEVS = {"blocks": dict(d_seed=32, n_modes=4, order=4, hidden=32),
        "khronos": dict(form="khronos", d_seed=16, heads=2, knots=4, rank=4)}
CONTROLS = {  # name -> ModelConfig changes of the control arm
    "factorized_wide": dict(arm="factorized", factorized={"rank": "span"}),
    "factorized_r48": dict(arm="factorized", factorized={"rank": 48}),
    "lev_codebooks": dict(arm="leviathan", lev={"splines": False}),
}


def small(form: str, control: str) -> ModelConfig:
    changes = dict(CONTROLS[control])
    lev = {**LEVS[form], **changes.pop("lev", {})}
    return ModelConfig(**SMALL, lev=lev, **changes)


@pytest.mark.parametrize("form", LEVS)
@pytest.mark.parametrize("control", CONTROLS)
def test_control_counts_equal_numel_on_meta_and_real_builds(form, control):
    cfg = small(form, control)
    for device in ("meta", None):
        model = build_model(cfg, device=device)
        assert count_params(cfg) == model.param_counts()
        assert count_params(cfg).total == sum(p.numel() for p in model.parameters())
    if cfg.arm == "leviathan":  # codebooks k b d_seed + W_r d_seed D, whatever the form
        assert isinstance(model.embed, CodebookLev) and model.embed.form == form
        ds = cfg.lev.d_seed
        assert count_params(cfg).input == cfg.lev.k * cfg.lev_base * ds + ds * cfg.d_model
        assert set(model.embed.param_roles()) == {"codebooks.weight", "res_proj.weight"}
    else:
        assert model.embed.weight.shape == (cfg.padded_vocab, factorized_rank(cfg))
    assert model.param_roles().keys() == dict(model.named_parameters()).keys()


@pytest.mark.parametrize("size", ["60M", "109M", "421M"])
def test_the_ablation_keeps_the_leviathan_backbone_and_loses_only_its_splines(size):
    dense = ladder_config("v1", size)
    lev = resolve_model_config(dense.replace(arm="leviathan"))
    abl = resolve_model_config(dense.replace(arm="leviathan", lev={"splines": False}))
    assert (abl.n_layers, abl.dense_n_layers) == (lev.n_layers, lev.dense_n_layers)
    c_lev, c_abl = count_params(lev), count_params(abl)
    assert (c_abl.body, c_abl.head) == (c_lev.body, c_lev.head)
    ds, D = lev.lev.d_seed, lev.d_model
    lost = ds * ds + 3 * ds + ds * lev.lev.n_basis * lev.lev.n_modes * lev.lev.hidden \
        + lev.lev.hidden * D  # W_s, beta_s, LayerNorm, Theta, W_o: what the ablation drops
    assert c_lev.input - c_abl.input == lost
    assert not abl.parameter_matched and lev.parameter_matched
    # flops: W_r only, once per position
    assert flops_per_token(lev, 512) - flops_per_token(abl, 512) == pytest.approx(
        6 * (ds * ds + ds * lev.lev.n_basis * lev.lev.n_modes * lev.lev.hidden
             + lev.lev.hidden * D + lev.lev.n_modes * lev.lev.hidden * lev.lev.order))


@pytest.mark.parametrize("size,rank", [("60M", 128), ("109M", 256), ("421M", 256)])
def test_span_rank_is_the_most_lev_rows_can_span(size, rank):
    fac = resolve_model_config(ladder_config("v1", size).replace(
        arm="factorized", factorized={"rank": "span"}))
    assert factorized_rank(fac) == lev_rank_bound(fac) == rank  # min(D, h + d_seed = 256)
    matched = resolve_model_config(fac.replace(factorized={"rank": "match"}))
    assert factorized_rank(matched) < 16 < rank
    assert fac.n_layers == matched.n_layers  # the Leviathan backbone at any rank
    assert count_params(fac).input == rank * (fac.padded_vocab + fac.d_model)
    assert fac.factorized.rank == "span" and not fac.parameter_matched


@pytest.mark.parametrize("form", LEVS)
def test_lev_table_rank_never_exceeds_the_bound(form):
    """The bound is real: LEV's generated table has at most lev_rank_bound independent rows
    (with the splines, and without: d_seed)."""
    torch.manual_seed(0)
    for splines in (True, False):
        cfg = ModelConfig(**{**SMALL, "d_model": 128, "n_heads": 4}, arm="leviathan",
                          lev={**LEVS[form], "splines": splines})
        with torch.no_grad():
            table = build_model(cfg).embed.full_table().double()
        s = torch.linalg.svdvals(table)  # (128,) descending
        bound = lev_rank_bound(cfg)
        assert bound < 128 and s[bound] < 1e-5 * s[0]  # beyond it: fp32 rounding only


def test_the_ablation_is_a_sum_of_per_digit_vectors():
    cfg = small("blocks", "lev_codebooks")
    gen = build_model(cfg).embed
    ids = torch.arange(cfg.padded_vocab)
    c = gen.coordinates(ids)  # (V, k)
    with torch.no_grad():
        per_digit = gen.res_proj(gen.codebooks.weight)  # (k b, D): W_r C_j[c] for each row
        expected = per_digit[c + gen.offsets].sum(1)
        torch.testing.assert_close(gen.full_table(), expected)


@pytest.mark.parametrize("form", LEVS)
def test_the_ablation_starts_at_the_form_output_scale(form):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**SMALL, "vocab_size": 4000, "vocab_pad_to": None}, arm="leviathan",
                      lev={**LEVS[form], "splines": False})
    with torch.no_grad():
        e = build_model(cfg).embed.full_table()
    assert 0.7 * cfg.init_std < e.std().item() < 1.4 * cfg.init_std


@pytest.mark.parametrize("form", LEVS)
@pytest.mark.parametrize("control", CONTROLS)
def test_control_trains_one_step_under_bf16_autocast(form, control):
    torch.manual_seed(0)
    cfg = small(form, control)
    model = build_model(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = torch.randint(0, cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    step = TrainStep(model, TrainerConfig(global_batch=2, micro_batch=2, lr=1e-2),
                     autocast=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.embed(batch).dtype == torch.float32  # the input stays fp32, as Dense's
    stats = step([batch])
    assert math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])
    assert stats["loss"] == pytest.approx(math.log(cfg.padded_vocab), rel=0.05)  # at init
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(before)  # every parameter, the input's included, got a step


@pytest.mark.parametrize("form", LEVS)
def test_the_ablation_compiles_without_graph_breaks(form):
    """The generator of lev.splines=false is one graph (as the full forms'), with a symbolic
    number of ids: counts vary step to step without recompiling."""
    import torch._dynamo as dynamo

    torch.manual_seed(0)
    gen = build_model(small(form, "lev_codebooks")).embed
    explained = dynamo.explain(gen._generate)(torch.arange(37))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    dynamo.reset()
    dynamo.utils.counters.clear()
    expected = {n: gen.generate(torch.arange(n)).detach() for n in (37, 53, 91)}
    gen.compile_regions(backend="aot_eager")
    for n, want in expected.items():
        got = gen.generate(torch.arange(n))
        got.sum().backward()  # through the compiled graph
        torch.testing.assert_close(got.detach(), want)
    assert not dynamo.utils.counters["graph_break"]
    assert dynamo.utils.counters["stats"]["unique_graphs"] <= 2  # static first, then dynamic


def test_a_fixed_rank_is_taken_as_given_and_validated():
    cfg = ModelConfig(**SMALL, arm="factorized", factorized={"rank": 48})
    assert factorized_rank(cfg) == 48 and lev_params(cfg) != 48 * (512 + 64)
    assert ModelConfig(**SMALL, arm="factorized").parameter_matched
