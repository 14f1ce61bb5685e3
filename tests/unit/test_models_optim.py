"""One weight-decay rule for every arm, by parameter role (leviathan/models/roles.py; issue 11).

Decayed: heads (untied, or the Dense tied table, which is the head) and weight matrices. Not
decayed: tables selected by an index (Dense untied input table, factorized T, LEV codebooks),
spline coefficients (Theta, S / Delta), gains, biases. Checked here name by name for each arm.
"""

from __future__ import annotations

import pytest
import torch

from leviathan.models import ModelConfig, build_model
from leviathan.models.roles import DECAYED, ROLES, decayed

TINY = dict(vocab_size=512, vocab_pad_to=None, d_model=64, n_layers=2, n_heads=4, max_seq_len=64,
            lev=dict(d_seed=32, n_modes=4, order=4, hidden=32, heads=2, rank=8))

BODY_DECAYED = {f"blocks.{i}.{w}" for i in range(2)
                for w in ("attn.qkv.weight", "attn.out.weight", "mlp.gate_up.weight",
                          "mlp.down.weight")}
BODY_NOT = {"norm.weight"} | {f"blocks.{i}.{n}.weight" for i in range(2)
                              for n in ("attn_norm", "mlp_norm")}
# (arm, head, form) -> (input/head parameters decayed, input/head parameters not decayed)
EXPECTED = {
    ("dense", "untied", "blocks"): ({"head.weight"}, {"embed.weight"}),
    ("dense", "tied", "blocks"): ({"embed.weight"}, set()),  # the tied table is the head
    ("leviathan", "untied", "blocks"): (
        {"head.weight", "embed.seed_proj.weight", "embed.out_proj.weight",
         "embed.res_proj.weight"},
        {"embed.codebooks.weight", "embed.seed_proj.bias", "embed.seed_norm.weight",
         "embed.seed_norm.bias", "embed.theta"}),
    ("leviathan", "generator", "blocks"): (
        {"embed.seed_proj.weight", "embed.out_proj.weight", "embed.res_proj.weight"},
        {"embed.codebooks.weight", "embed.seed_proj.bias", "embed.seed_norm.weight",
         "embed.seed_norm.bias", "embed.theta"}),
    ("leviathan", "untied", "khronos"): (
        {"head.weight", "embed.seed_proj.weight", "embed.out_proj.weight"},
        {"embed.codebooks.weight", "embed.norm_gain", "embed.norm_bias", "embed.coef"}),
    ("factorized", "untied", "blocks"): ({"head.weight", "embed.proj.weight"}, {"embed.weight"}),
    ("factorized", "untied", "khronos"): ({"head.weight", "embed.proj.weight"}, {"embed.weight"}),
}


def groups_by_name(model, weight_decay=0.1):
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = model.optim_groups(weight_decay)
    assert decay["weight_decay"] == weight_decay and no_decay["weight_decay"] == 0.0
    return ({names[id(p)] for p in decay["params"]}, {names[id(p)] for p in no_decay["params"]})


@pytest.mark.parametrize("arm,head,form", sorted(EXPECTED))
def test_decayed_and_undecayed_sets_by_role(arm, head, form):
    model = build_model(ModelConfig(arm=arm, head=head, **{**TINY, "lev": {**TINY["lev"],
                                                                            "form": form}}))
    decay, no_decay = groups_by_name(model)
    want_decay, want_not = EXPECTED[arm, head, form]
    assert decay == BODY_DECAYED | want_decay
    assert no_decay == BODY_NOT | want_not
    roles = model.param_roles()
    assert roles.keys() == dict(model.named_parameters()).keys()
    for name, role in roles.items():  # the same rule for every arm: decayed iff head or weight
        assert (name in decay) == (role in DECAYED) == decayed(role), (name, role)


def test_the_tied_table_is_treated_as_the_head_it_is():
    tied = build_model(ModelConfig(arm="dense", head="tied", **TINY))
    untied = build_model(ModelConfig(arm="dense", head="untied", **TINY))
    assert tied.param_roles()["embed.weight"] == untied.param_roles()["head.weight"] == "head"
    assert untied.param_roles()["embed.weight"] == "table"


def test_adamw_decays_exactly_the_decayed_group():
    """One AdamW step with zero gradients moves only decayed parameters (by lr x wd x value)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arm="leviathan", head="untied", **TINY))
    opt = torch.optim.AdamW(model.optim_groups(0.5), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    decay, _ = groups_by_name(model)
    for name, p in model.named_parameters():
        expected = before[name] * (1 - 0.1 * 0.5) if name in decay else before[name]
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7, msg=name)


def test_unknown_role_is_refused():
    assert set(DECAYED) < set(ROLES)
    with pytest.raises(ValueError, match=r"unknown parameter role 'embedding'; allowed: head"):
        decayed("embedding")
