"""Same numerics for every arm under autocast (issue 11, point 1).

The input representation hands the backbone the Dense arm's dtype (its nn.Embedding lookup stays
fp32 under autocast): LEV (both forms, both impls) and the factorized table run with autocast off
in their parameters' dtype, so under CPU bf16 autocast every arm's block 0 sees fp32, and LEV's
output under autocast equals its fp32 output (stated tolerance: rtol 1e-6, atol 1e-7; it is the
same fp32 computation, the tolerance only allows for kernel reordering).
"""

from __future__ import annotations

import pytest
import torch

from leviathan.models import ModelConfig, build_model

TINY = dict(vocab_size=512, vocab_pad_to=None, d_model=64, n_layers=2, n_heads=4, max_seq_len=64)
SMALL_LEV = dict(d_seed=32, n_modes=4, order=4, hidden=32, heads=2, knots=8, rank=8)
CASES = [  # (arm, head, lev overrides)
    ("dense", "untied", {}), ("dense", "tied", {}),
    ("leviathan", "untied", {"form": "blocks", "impl": "matmul"}),
    ("leviathan", "untied", {"form": "blocks", "impl": "bag"}),
    ("leviathan", "untied", {"form": "khronos", "impl": "matmul"}),
    ("leviathan", "untied", {"form": "khronos", "impl": "bag"}),
    ("leviathan", "generator", {"form": "khronos", "impl": "bag"}),
    ("factorized", "untied", {}),
]
AUTOCAST_TOL = dict(rtol=1e-6, atol=1e-7)


def model_for(arm, head, lev):
    torch.manual_seed(0)
    return build_model(ModelConfig(arm=arm, head=head, **TINY, lev={**SMALL_LEV, **lev}))


def block0_input_dtype(model, idx) -> torch.dtype:
    seen = []
    handle = model.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(idx)
    finally:
        handle.remove()
    assert len(seen) == 1 and torch.isfinite(logits.float()).all()
    return seen[0].dtype


def test_block0_input_dtype_is_the_dense_one_for_every_arm_under_bf16_autocast():
    idx = torch.randint(0, 512, (2, 16))
    dense_dtype = block0_input_dtype(model_for("dense", "untied", {}).train(), idx)
    assert dense_dtype == torch.float32  # nn.Embedding output is not autocast
    for arm, head, lev in CASES:
        model = model_for(arm, head, lev)
        assert block0_input_dtype(model.train(), idx) == dense_dtype, (arm, head, lev)
        model.eval()
        with torch.no_grad():  # the cached-table path
            assert block0_input_dtype(model, idx) == dense_dtype, (arm, head, lev, "eval")


@pytest.mark.parametrize("form,impl", [("blocks", "matmul"), ("blocks", "bag"),
                                       ("khronos", "matmul"), ("khronos", "bag")])
def test_lev_under_autocast_matches_fp32_forward_and_backward(form, impl):
    model = model_for("leviathan", "untied", {"form": form, "impl": impl}).train()
    lev = model.embed
    idx = torch.randint(0, 512, (4, 32))
    w = torch.randn(4, 32, 64)

    def run(autocast: bool):
        lev.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            e = lev(idx)  # every impl works under autocast (impl=bag used to raise)
        (e * w).sum().backward()
        return e.detach(), {n: p.grad.clone() for n, p in lev.named_parameters()}

    e32, g32 = run(False)
    e16, g16 = run(True)
    assert e16.dtype == e32.dtype == torch.float32
    torch.testing.assert_close(e16, e32, **AUTOCAST_TOL)
    for name in g32:
        torch.testing.assert_close(g16[name], g32[name], **AUTOCAST_TOL, msg=name)
    lev.eval()
    with torch.no_grad():
        table32 = lev.table()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(lev.table(), table32, rtol=0, atol=0)  # one cached table


def test_whole_model_trains_one_step_under_autocast_for_every_arm():
    idx = torch.randint(0, 512, (2, 17))
    for arm, head, lev in CASES:
        model = model_for(arm, head, lev).train()
        opt = torch.optim.AdamW(model.optim_groups(0.1), lr=1e-3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1),
                                                 idx[:, 1:].flatten())
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()), (arm, lev)
        opt.step()
