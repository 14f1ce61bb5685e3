"""The decoder: causality, heads, optimiser groups, and that a tiny model of each arm trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leviathan.models import FactorizedEmbedding, ModelConfig, build_model
from leviathan.models.lev import LevGenerator

TINY = dict(vocab_size=512, vocab_pad_to=None, d_model=64, n_layers=2, n_heads=4, max_seq_len=64,
            lev=dict(d_seed=32, n_modes=4, order=4, hidden=32))
ARMS = [("dense", "untied"), ("dense", "tied"), ("leviathan", "untied"),
        ("leviathan", "generator"), ("factorized", "untied")]


def tiny(arm: str, head: str = "untied", **kw) -> ModelConfig:
    return ModelConfig(arm=arm, head=head, **{**TINY, **kw})


@pytest.mark.parametrize("arm,head", ARMS)
def test_causality_future_tokens_never_change_earlier_logits(arm, head):
    torch.manual_seed(0)
    model = build_model(tiny(arm, head))
    idx = torch.randint(0, 512, (2, 24))
    changed = idx.clone()
    t = 11
    changed[:, t:] = torch.randint(0, 512, (2, 24 - t))
    changed[:, t] = (idx[:, t] + 1) % 512  # surely different at position t
    for mode in ("train", "eval"):
        getattr(model, mode)()
        with torch.no_grad():
            a, b = model(idx), model(changed)
        torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
        assert (a[:, t:] - b[:, t:]).abs().amax() > 1e-4  # the change is visible from t on


@pytest.mark.parametrize("arm,head", ARMS)
def test_tiny_model_overfits_one_batch(arm, head):
    """The loss on one fixed batch falls by a large factor in a few dozen AdamW steps."""
    torch.manual_seed(0)
    model = build_model(tiny(arm, head))
    opt = torch.optim.AdamW(model.optim_groups(0.0), lr=1e-2)
    batch = torch.randint(0, 512, (4, 33))
    x, y = batch[:, :-1], batch[:, 1:]
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 5.5  # ~ log 512 at init
    assert losses[-1] < losses[0] / 20, losses[::5]


def test_shapes_heads_and_shared_weights():
    idx = torch.randint(0, 512, (3, 10))
    for arm, head in ARMS:
        model = build_model(tiny(arm, head))
        assert model(idx).shape == (3, 10, 512)
        assert isinstance(model.embed, LevGenerator) == (arm == "leviathan")
        assert isinstance(model.embed, FactorizedEmbedding) == (arm == "factorized")
        assert (model.head is None) == (head in ("tied", "generator"))
    tied = build_model(tiny("dense", "tied"))
    h = torch.randn(1, 2, 64)
    torch.testing.assert_close(tied.logits(h), h @ tied.embed.weight.T)
    assert len(list(tied.parameters())) == len({id(p) for p in tied.parameters()})


def test_sequence_longer_than_max_seq_len_names_the_key():
    model = build_model(tiny("dense", max_seq_len=16))
    with pytest.raises(ValueError, match="model.max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_optim_groups_hold_every_parameter_once():
    """Every parameter in exactly one of the two groups; the by-role rule: test_models_optim.py."""
    for arm, head in ARMS:
        model = build_model(tiny(arm, head))
        decay, no_decay = model.optim_groups(0.1)
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        ids = {id(p) for g in (decay, no_decay) for p in g["params"]}
        assert ids == {id(p) for p in model.parameters()}  # every parameter, exactly once
        assert len(decay["params"]) + len(no_decay["params"]) == len(ids)
        names = {id(p): n for n, p in model.named_parameters()}
        no_decay_names = {names[id(p)] for p in no_decay["params"]}
        decay_names = {names[id(p)] for p in decay["params"]}
        assert all(p.ndim >= 2 for p in decay["params"])
        assert {"norm.weight", "blocks.0.attn_norm.weight"} <= no_decay_names
        assert "blocks.1.mlp.down.weight" in decay_names
        torch.optim.AdamW(model.optim_groups(0.1), lr=1e-3)  # accepted as is


def test_meta_build_and_num_params():
    model = build_model(tiny("leviathan"), device="meta")
    assert next(model.parameters()).device.type == "meta"
    counts = model.param_counts()
    assert model.num_params() == counts.total
    assert model.num_params(exclude_input=True) == counts.head + counts.body
    assert model.flops_per_token(64) > 6 * counts.body


def test_init_scale_of_both_input_representations():
    torch.manual_seed(0)
    idx = torch.arange(512).view(8, 64)
    for arm in ("dense", "leviathan", "factorized"):
        model = build_model(tiny(arm))
        e = model.embed(idx)
        assert 0.5 * 0.02 < e.std().item() < 2 * 0.02, arm
        assert torch.isfinite(model(idx)).all()


def test_meta_build_then_materialise_and_reset():
    """build on meta, to_empty, reset_parameters: buffers (rotary, LEV offsets) are rebuilt."""
    for arm in ("dense", "leviathan", "factorized"):
        torch.manual_seed(0)
        ref = build_model(tiny(arm))
        model = build_model(tiny(arm), device="meta").to_empty(device="cpu")
        with torch.no_grad():
            model.reset_parameters()
        torch.testing.assert_close(model.rope.cos, ref.rope.cos)
        torch.testing.assert_close(dict(model.named_buffers()), dict(ref.named_buffers()))
        idx = torch.randint(0, 512, (2, 16))
        assert torch.isfinite(model(idx)).all()
