"""LEV's khronos form against the formulas of issue 17, evaluated directly with loops (fp64).

    x_l = sigmoid(LN_l(W_seed,l z) / temp); B[d, g] = b_g(x_l[d]) / sum_g' b_g'(x_l[d]);
    phi[d, rho] = sum_g B[d, g] S_l[d, g, rho]; M_l[rho] = prod_d phi[d, rho]; e = sum_l M_l W_out,l
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from leviathan.models import LevGenerator, ModelConfig, build_model
from leviathan.models.bspline import centred_dense_basis, centred_local_basis
from leviathan.models.lev_khronos import KhronosLev, mode_product

SMALL = dict(form="khronos", k=2, d_seed=4, heads=2, knots=5, knot_degree=2, rank=3, order=2)


def small_cfg(**lev) -> ModelConfig:
    return ModelConfig(arm="leviathan", vocab_size=60, vocab_pad_to=None, d_model=8, n_heads=2,
                       max_seq_len=16, lev={**SMALL, **lev})


def centred_element(g: int, n_knots: int, degree: int, x: float) -> float:
    """b_g(x): scipy's B-spline element on the degree + 2 knots centred on t_g = g/(kappa-1)."""
    step = 1.0 / (n_knots - 1)
    t = g * step + step * (np.arange(degree + 2) - (degree + 1) / 2)
    value = BSpline.basis_element(t, extrapolate=False)(x)
    return 0.0 if np.isnan(value) else float(value)


def reference(gen: KhronosLev, token: int) -> np.ndarray:
    """e(token) by the formulas, one scalar at a time."""
    P = {n: p.detach().double().numpy() for n, p in gen.named_parameters()}
    ds, H, kappa, r, p = gen.d_seed, gen.heads, gen.knots, gen.rank, gen.knot_degree
    z = np.zeros(ds)
    for j in range(gen.k):
        c_j = (token // gen.base**j) % gen.base
        z += P["codebooks.weight"][j * gen.base + c_j]
    e = np.zeros(gen.d_model)
    for head in range(H):
        u = P["seed_proj.weight"][head * ds:(head + 1) * ds] @ z
        mean, var = u.mean(), ((u - u.mean()) ** 2).mean()
        y = (u - mean) / math.sqrt(var + gen.eps) * P["norm_gain"][head] + P["norm_bias"][head]
        x = 1.0 / (1.0 + np.exp(-y / gen.latent_temp))
        S = P["coef"][head] + (1.0 if gen.one_plus_delta else 0.0)  # (ds, kappa, r)
        M = np.ones(r)
        for d in range(ds):
            b = np.array([centred_element(g, kappa, p, x[d]) for g in range(kappa)])
            B = b / b.sum()
            for rho in range(r):
                M[rho] *= sum(B[g] * S[d, g, rho] for g in range(kappa))
        W_out = P["out_proj.weight"][:, head * r:(head + 1) * r]  # (D, r)
        e += W_out @ M
    return e


@pytest.mark.parametrize("lev", [dict(), dict(impl="bag"), dict(log_product=False),
                                 dict(one_plus_delta=False), dict(knot_degree=3, knots=6),
                                 dict(knot_degree=1, latent_temp=1.0)])
def test_khronos_equals_the_loop_based_formulas(lev):
    torch.manual_seed(0)
    gen = LevGenerator(small_cfg(delta_std=0.8, **lev)).double()  # S of both signs
    assert isinstance(gen, KhronosLev)
    with torch.no_grad():
        for p in (gen.norm_gain, gen.norm_bias, gen.codebooks.weight, gen.seed_proj.weight):
            p.normal_(0.0, 1.0)  # latent coordinates spread over [0, 1]
    ids = torch.arange(gen.vocab)
    e = gen.generate(ids)
    expected = np.stack([reference(gen, int(i)) for i in ids])
    assert (expected != 0).all()
    np.testing.assert_allclose(e.detach().numpy(), expected, rtol=1e-9, atol=1e-12)
    x = gen.latent(gen.seed(ids)).detach()
    assert float(x.min()) < 0.25 and float(x.max()) > 0.75  # edge knots (renormalised) too


@pytest.mark.parametrize("n_knots,degree", [(16, 2), (32, 2), (5, 3), (8, 1), (4, 0), (6, 4)])
def test_centred_basis_is_a_partition_of_unity_with_local_support(n_knots, degree):
    x = torch.cat([torch.rand(3000, dtype=torch.float64, generator=torch.Generator()
                              .manual_seed(0)),
                   torch.linspace(0, 1, n_knots, dtype=torch.float64)])  # the knots themselves
    B = centred_dense_basis(x, n_knots, degree)  # (N, kappa)
    torch.testing.assert_close(B.sum(-1), torch.ones_like(x), rtol=0, atol=1e-12)
    assert (B >= 0).all() and int((B > 0).sum(-1).max()) <= degree + 1
    index, values = centred_local_basis(x, n_knots, degree)
    assert index.shape == values.shape == (x.numel(), degree + 1)
    for i in range(0, x.numel(), 97):  # the normalised scipy elements, point by point
        b = np.array([centred_element(g, n_knots, degree, float(x[i])) for g in range(n_knots)])
        np.testing.assert_allclose(B[i].numpy(), b / b.sum(), rtol=0, atol=1e-12)


def test_log_domain_product_equals_plain_product_where_that_does_not_underflow():
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(64, 128, 7, dtype=torch.float64, generator=g) * 0.3 + 1.0  # both signs
    phi[0, 5, 0] = -phi[0, 5, 0]
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
        a = phi.to(dtype).clone().requires_grad_()
        b = phi.to(dtype).clone().requires_grad_()
        plain, logd = a.prod(1), mode_product(b, 1)
        assert (plain.abs() > torch.finfo(dtype).tiny * 1e6).all()  # no underflow here
        assert ((plain < 0).sum() > 0) and ((plain > 0).sum() > 0)
        torch.testing.assert_close(logd, plain, rtol=rtol, atol=0)
        w = torch.randn(plain.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        (plain * w).sum().backward()
        (logd * w).sum().backward()
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(b.grad, a.grad, rtol=rtol * 10, atol=1e-12)
    half = mode_product(phi.to(torch.bfloat16), 1)
    assert half.dtype == torch.float32  # computed in fp32 at least
    # where partial plain products underflow and the whole does not, the log domain stays exact
    tiny = torch.tensor([[1e-30, 1e-30, 1e30, 1e30]], dtype=torch.float32)
    torch.testing.assert_close(mode_product(tiny, 1), torch.ones(1), rtol=1e-5, atol=0)


def _grads(gen, ids, weight):
    gen.zero_grad()
    e = gen.embed_unique(ids)
    (e * weight).sum().backward()
    return e.detach(), {n: p.grad.clone() for n, p in gen.named_parameters()}


@pytest.mark.parametrize("impl", ["matmul", "bag"])
def test_unique_path_positions_path_impls_and_checkpointing_agree(impl):
    torch.manual_seed(0)
    cfg = ModelConfig(arm="leviathan", vocab_size=500, vocab_pad_to=512, d_model=16, n_heads=2,
                      lev=dict(form="khronos", d_seed=16, heads=3, knots=8, rank=4, impl=impl))
    gen = LevGenerator(cfg).double()
    ids = torch.randint(0, 512, (3, 20))
    ids[1, :5] = ids[0, :5]
    w = torch.randn(3, 20, 16, dtype=torch.float64)
    e_u, g_u = _grads(gen, ids, w)
    gen.zero_grad()
    (gen.embed_positions(ids) * w).sum().backward()
    torch.testing.assert_close(gen.embed_positions(ids).detach(), e_u, rtol=1e-12, atol=1e-14)
    for n, p in gen.named_parameters():
        assert g_u[n].abs().sum() > 0, n
        torch.testing.assert_close(p.grad, g_u[n], rtol=1e-9, atol=1e-13)
    other = LevGenerator(cfg.replace(lev={"impl": "bag" if impl == "matmul" else "matmul",
                                          "checkpoint": False})).double()
    other.load_state_dict(gen.state_dict())
    e_o, g_o = _grads(other, ids, w)
    torch.testing.assert_close(e_o, e_u, rtol=1e-10, atol=1e-13)
    for n in g_u:
        torch.testing.assert_close(g_o[n], g_u[n], rtol=1e-8, atol=1e-12)


def test_eval_table_and_generator_head_with_khronos():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arm="leviathan", head="generator", vocab_size=500,
                                    vocab_pad_to=512, d_model=16, n_heads=2, max_seq_len=16,
                                    lev=dict(form="khronos", d_seed=16, heads=2, rank=4)))
    idx = torch.randint(0, 512, (2, 8))
    logits = model(idx)  # training: unique ids in, the whole table regenerated as the head
    logits.logsumexp(-1).mean().backward()
    assert model.embed.coef.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        table = model.embed.table()
        assert model.embed.table() is table  # cached
        torch.testing.assert_close(table, model.embed.full_table(), rtol=0, atol=0)
        torch.testing.assert_close(model(idx), logits.detach(), rtol=1e-5, atol=1e-6)


def test_paper_settings_gradients_finite_at_init():
    """d_seed 128, k 3 (b 59), 8 heads, 16 knots, quadratic, rank 64 at D 512 (fp32)."""
    torch.manual_seed(0)
    cfg = ModelConfig(arm="leviathan", d_model=512, n_heads=8, lev=dict(form="khronos"))
    gen = LevGenerator(cfg)
    assert (gen.base, gen.heads, gen.knots, gen.knot_degree, gen.rank) == (59, 8, 16, 2, 64)
    ids = torch.randint(0, cfg.vocab_size, (512,))
    e = gen.embed_unique(ids)
    assert torch.isfinite(e).all() and 0.01 < e.std().item() < 1.0
    (e * torch.randn_like(e)).sum().backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("form", ["blocks", "khronos"])
def test_lev_generator_builds_its_form_and_survives_deepcopy_and_pickle(form):
    import copy
    import pickle

    from leviathan.models.lev_blocks import BlocksLev

    gen = LevGenerator(small_cfg(form=form))
    assert type(gen) is {"blocks": BlocksLev, "khronos": KhronosLev}[form]
    ids = torch.arange(gen.vocab)
    with torch.no_grad():
        for clone in (copy.deepcopy(gen), pickle.loads(pickle.dumps(gen))):
            assert type(clone) is type(gen)
            torch.testing.assert_close(clone.generate(ids), gen.generate(ids), rtol=0, atol=0)
