"""LEV: coordinates, the B-spline basis, the unique-id / per-position / cached-table paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from leviathan.models import LevGenerator, ModelConfig, build_model
from leviathan.models.bspline import basis_polynomials, dense_basis, knots, local_basis
from leviathan.models.lev import token_coordinates

SMALL_LEV = dict(d_seed=32, n_modes=4, order=4, hidden=32)


def small_cfg(**kw) -> ModelConfig:
    base = dict(arm="leviathan", vocab_size=500, vocab_pad_to=512, max_seq_len=32,
                lev=dict(SMALL_LEV))
    if "lev" in kw:
        base["lev"].update(kw.pop("lev"))
    return ModelConfig(**{**base, **kw})


# ---- coordinates -----------------------------------------------------------------------------
@pytest.mark.parametrize("v_pad,k", [(200376, 3), (512, 3), (1000, 2), (4096, 4)])
def test_coordinate_map_is_a_bijection(v_pad, k):
    cfg = ModelConfig(arm="leviathan", vocab_size=v_pad, vocab_pad_to=None, lev=dict(k=k))
    b = cfg.lev_base
    assert b**k >= v_pad > (b - 1) ** k  # smallest such base
    ids = torch.arange(v_pad)
    c = token_coordinates(ids, b, k)  # (V, k)
    assert c.shape == (v_pad, k) and int(c.min()) >= 0 and int(c.max()) < b
    back = (c * b ** torch.arange(k)).sum(-1)  # invert the base-b digits
    assert torch.equal(back, ids)
    assert len({tuple(row) for row in c.tolist()}) == v_pad  # injective


def test_paper_vocabulary_gives_base_59():
    cfg = ModelConfig(arm="leviathan")
    assert cfg.padded_vocab == 200376 and cfg.lev_base == 59
    assert LevGenerator(cfg.replace(d_model=64, n_heads=4)).codebooks.weight.shape == (177, 128)


# ---- the B-spline basis ------------------------------------------------------------------------
@pytest.mark.parametrize("grid_size,degree", [(8, 3), (5, 2), (4, 1), (6, 0), (3, 4)])
def test_basis_partition_of_unity_and_equal_to_scipy(grid_size, degree):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(2000, generator=g, dtype=torch.float64),
                   torch.tensor([0.0, 1.0, 0.5, 1.0 / grid_size], dtype=torch.float64)])
    phi = dense_basis(x, grid_size, degree)  # (N, n_b)
    n_b = grid_size + degree
    assert phi.shape == (x.numel(), n_b)
    torch.testing.assert_close(phi.sum(-1), torch.ones_like(x), rtol=0, atol=1e-12)
    assert (phi >= -1e-15).all()
    assert int((phi.abs() > 1e-15).sum(-1).max()) <= degree + 1  # local support
    t = knots(grid_size, degree).numpy()
    xs = x.numpy()
    for i in range(n_b):  # basis element i of scipy on the same knots
        coef = np.zeros(n_b)
        coef[i] = 1.0
        ref = BSpline(t, coef, degree, extrapolate=False)(xs)
        np.testing.assert_allclose(phi[:, i].numpy(), np.nan_to_num(ref), rtol=0, atol=1e-12)


def test_cubic_basis_polynomials_are_the_uniform_cubic_blending_functions():
    expected = torch.tensor([[1, 4, 1, 0], [-3, 0, 3, 0], [3, -6, 3, 0], [-1, 3, -3, 1]],
                            dtype=torch.float64) / 6
    torch.testing.assert_close(basis_polynomials(3), expected, rtol=0, atol=1e-15)


def test_local_basis_gradient_matches_finite_differences():
    x = torch.rand(64, dtype=torch.float64).clamp(0.01, 0.99).requires_grad_()
    coef = torch.randn(8 + 3, dtype=torch.float64)
    torch.autograd.gradcheck(lambda v: dense_basis(v, 8, 3) @ coef, (x,))
    span, values = local_basis(x.detach(), 8, 3)
    assert values.shape == (64, 4) and int(span.max()) <= 7


# ---- the three evaluation paths ---------------------------------------------------------------
def _unique_vs_positions(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    gen = LevGenerator(cfg).double()
    ids = torch.randint(0, cfg.padded_vocab, (3, 40))
    ids[1, :10] = ids[0, :10]  # repeated ids
    w = torch.randn(3, 40, cfg.d_model, dtype=torch.float64)

    def run(fn):
        gen.zero_grad()
        e = fn(ids)  # (3, 40, D)
        (e * w).sum().backward()
        return e.detach(), {n: p.grad.clone() for n, p in gen.named_parameters()}

    e_unique, g_unique = run(gen.embed_unique)
    e_pos, g_pos = run(gen.embed_positions)
    torch.testing.assert_close(e_unique, e_pos, rtol=1e-12, atol=1e-12)
    assert g_unique.keys() == g_pos.keys()
    for name in g_unique:
        assert g_unique[name].abs().sum() > 0, name
        torch.testing.assert_close(g_unique[name], g_pos[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["matmul", "bag"])
def test_unique_path_equals_per_position_path(impl):
    _unique_vs_positions(small_cfg(lev=dict(impl=impl)))


def test_residual_switch_and_impls_agree():
    torch.manual_seed(0)
    a = LevGenerator(small_cfg(lev=dict(impl="matmul"))).double()
    b = LevGenerator(small_cfg(lev=dict(impl="bag"))).double()
    b.load_state_dict(a.state_dict())
    ids = torch.arange(512)
    torch.testing.assert_close(a.generate(ids), b.generate(ids), rtol=1e-10, atol=1e-12)
    no_res = LevGenerator(small_cfg(lev=dict(residual=False)))
    assert no_res.res_proj is None
    assert sum(p.numel() for p in a.parameters()) - sum(
        p.numel() for p in no_res.parameters()) == 32 * 64


def test_model_training_forward_uses_unique_ids(monkeypatch):
    model = build_model(small_cfg()).train()
    calls = []
    real = model.embed.generate
    monkeypatch.setattr(model.embed, "generate", lambda ids: calls.append(ids) or real(ids))
    idx = torch.tensor([[1, 2, 2, 3, 1, 1, 7, 7]])
    model(idx)
    assert len(calls) == 1 and calls[0].tolist() == [1, 2, 3, 7]


def test_eval_table_equals_fresh_evaluation_and_is_cached():
    torch.manual_seed(0)
    model = build_model(small_cfg())
    idx = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        train_logits = model(idx)  # training mode: unique-id path
        model.eval()
        lev = model.embed
        table = lev.table()
        torch.testing.assert_close(table, lev.full_table(), rtol=0, atol=0)
        torch.testing.assert_close(model(idx), train_logits, rtol=1e-6, atol=1e-6)
        assert lev.table() is table  # no parameter changed: same tensor, not recomputed
        torch.testing.assert_close(lev(idx), lev.embed_positions(idx), rtol=1e-6, atol=1e-7)
    model.train()
    assert lev._table is None  # train() drops it


@pytest.mark.parametrize("opt_kw", [dict(foreach=False), dict(foreach=True), dict(fused=True)])
def test_eval_table_refreshed_after_optimizer_step(opt_kw):
    torch.manual_seed(0)
    model = build_model(small_cfg())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, **opt_kw)
    idx = torch.randint(0, 512, (2, 16))
    model.eval()
    with torch.no_grad():
        stale = model(idx)
        table = model.embed.table().clone()
    model(idx).logsumexp(-1).mean().backward()  # eval mode with autograd: fresh path
    opt.step()  # parameters change (fused AdamW does not bump version counters)
    with torch.no_grad():
        fresh = model.embed.full_table()
        assert not torch.allclose(fresh, table)
        torch.testing.assert_close(model.embed.table(), fresh, rtol=0, atol=0)
        assert not torch.allclose(model(idx), stale)


def test_eval_table_refreshed_after_data_write_and_load_state_dict():
    torch.manual_seed(0)
    model = build_model(small_cfg()).eval()
    other = build_model(small_cfg())  # different init (the generator moved on)
    lev = model.embed
    with torch.no_grad():
        before = lev.table().clone()
        lev.out_proj.weight.data.mul_(2.0)  # bypasses version counters
        torch.testing.assert_close(lev.table(), lev.full_table(), rtol=0, atol=0)
        assert not torch.allclose(lev.table(), before)
        model.load_state_dict(other.state_dict())
        assert lev._table is None
        torch.testing.assert_close(lev.table(), other.embed.full_table(), rtol=0, atol=0)


@pytest.mark.slow
def test_paper_settings_finite_at_init():
    """d_seed 128, M 8, Q 4, k 3 (b 59) on the o200k vocabulary at d_model 512."""
    torch.manual_seed(0)
    cfg = ModelConfig(arm="leviathan", d_model=512, n_layers=1, n_heads=8, max_seq_len=32)
    assert (cfg.lev.d_seed, cfg.lev.n_modes, cfg.lev.order, cfg.lev_base) == (128, 8, 4, 59)
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 32))
    logits = model(idx)
    assert logits.shape == (2, 32, 200376) and torch.isfinite(logits).all()
    targets = torch.randint(0, cfg.vocab_size, idx.shape)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    assert abs(loss.item() - np.log(200376)) < 1.0  # near-uniform prediction at init
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name, p in model.embed.named_parameters():
        assert p.grad.abs().sum() > 0, name  # every LEV parameter receives gradient
    e = model.embed.embed_unique(idx)
    assert 0.2 * cfg.init_std < e.std().item() < 5 * cfg.init_std


def test_generator_head_uses_the_lev_table():
    torch.manual_seed(0)
    model = build_model(small_cfg(head="generator"))
    assert model.head is None
    idx = torch.randint(0, 512, (2, 8))
    logits = model(idx)  # training: table regenerated with autograd
    logits.logsumexp(-1).mean().backward()
    assert model.embed.out_proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        h = torch.randn(1, 3, 64)
        torch.testing.assert_close(model.logits(h), h @ model.embed.full_table().T)
        torch.testing.assert_close(model(idx), logits.detach(), rtol=1e-5, atol=1e-6)
