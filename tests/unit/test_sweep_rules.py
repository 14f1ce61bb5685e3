"""The ladder's rules in the plan: controls need their Leviathan partner, matched pairs differ
in the model only, LR from the size rule times the grid's variants, WSD-S main runs and their
cooldown branches, Dense-only rungs; the data fingerprint follows the real rank layout."""

from __future__ import annotations

import math

import pytest
from helpers.sweep import plan_for

from leviathan.sweep.grid import GridError
from leviathan.sweep.plan import format_plan
from leviathan.sweep.rules import rule_lr

SMOKE = ["+grid=smoke", "grid.sizes=[smoke/13M]", "grid.tokens=[8192]"]


@pytest.mark.parametrize("overrides,match", [
    (["+grid.arms.factorized=['model.arm=dense']", "~grid.arms.leviathan"],
     r"grid.arms.factorized: the factorized control needs its Leviathan partner"),
    (["+grid.arms.wizard=['model.arm=dense']"], r"grid.arms.wizard: unknown arm; allowed values: "
                                               r"dense, leviathan, factorized, dense_untied"),
    (["grid.lr=[1.0,1.0]"], "grid.lr"),
    (["grid.cooldowns=[0.5,-1]"], "grid.cooldowns"),
])
def test_bad_arms_and_rules_fail_naming_the_key(overrides, match, tmp_path):
    with pytest.raises(GridError, match=match):
        plan_for([*SMOKE, *overrides], tmp_path)


def test_pairs_differing_in_anything_but_the_model_are_refused(tmp_path):
    arms = "grid.arms.leviathan=['model.arm=leviathan','model.head=untied'," \
           "'model.depth_rule=isoparametric','{}']"
    for key, value in (("data.seq_len", 32), ("trainer.grad_clip", 0.5),
                       ("data.num_workers", 1), ("trainer.precision", "bf16-mixed")):
        with pytest.raises(GridError, match=rf"pair 13M-8\.19Ktok-s0: .* differ in {key} "):
            plan_for([*SMOKE, arms.format(f"{key}={value}")], tmp_path)
    # a per-arm learning rate and micro-batch are fine (tuned per arm, speed only)
    _cfg, plan = plan_for([*SMOKE, arms.format("trainer.lr=0.001"),
                           "grid.arms.dense=['model.arm=dense','trainer.micro_batch=4']"], tmp_path)
    assert {r.arm: r.lr for r in plan.runs} == {"dense": 3e-3, "leviathan": 1e-3}


def test_lr_rule_and_variants_per_arm(tmp_path):
    _cfg, plan = plan_for([*SMOKE, "grid.lr=[0.5,1.0,2.0]", "grid.lr_rule.enabled=true",
                               "grid.lr_rule.warmup_tokens_per_param=0.001"], tmp_path)
    assert len(plan.runs) == 6 and plan.runs[0].run.endswith("-dense-lr0p5")
    for r in plan.runs:
        scale = float(r.run.rsplit("-lr", 1)[1].replace("p", "."))
        assert r.lr == pytest.approx(rule_lr(plan_rule(), r.params_body) * scale)
        t = r.config["trainer"]
        assert t["min_lr"] == pytest.approx(r.lr / 10)  # the configured floor ratio
        assert t["warmup_steps"] == math.ceil(0.001 * r.params_body / (t["global_batch"] * 64))
    lev = [r for r in plan.runs if r.arm == "leviathan"]
    dense = [r for r in plan.runs if r.arm == "dense"]
    assert lev[1].lr < dense[1].lr  # the deeper arm's own (larger) body sets its LR


def plan_rule():
    from leviathan.sweep.grid import LRRule

    return LRRule(enabled=True, warmup_tokens_per_param=0.001)


def test_wsd_s_main_runs_and_cooldown_branches(tmp_path):
    _cfg, plan = plan_for([*SMOKE, "grid.tokens=[4096]", "grid.cooldowns=[0.5,1.0]",
                           "trainer.cooldown_fraction=0.25", "trainer.warmup_steps=1"], tmp_path)
    by = {r.run: r for r in plan.runs}
    main = by["smoke-13M-4.1Ktok-s0-dense"]
    b1, b2 = by[f"{main.run}-cd0p5"], by[f"{main.run}-cd1"]
    tps = 8 * 64
    assert (b1.steps, b2.steps) == (4, 8) and b2.tokens == 4096 == 8 * tps
    assert main.schedule == "constant" and main.config["trainer"]["snapshot_steps"] == [3, 6]
    assert main.steps == 6  # the main run goes as far as the last branch's start
    for b, start in ((b1, 3), (b2, 6)):
        t = b.config["trainer"]
        assert b.schedule == "wsd" and b.branch_of == main.run and b.config["meta"]["cooldown"]
        assert t["init_from"].endswith(f"/runs/{main.run}/step_{start}.ckpt")
        assert t["warmup_steps"] == main.config["trainer"]["warmup_steps"]
        assert b.flops == pytest.approx(main.flops / main.steps * (b.steps - start))
    text = format_plan(plan)
    assert "WSD-S: 4 cooldown branches from 2 main runs" in text and "separate cosine" in text


def test_dense_only_rungs(tmp_path):
    _cfg, plan = plan_for([*SMOKE, "grid.dense_sizes=[smoke/26M]"], tmp_path)
    rung = [r for r in plan.runs if r.size == "26M"]
    assert [r.arm for r in rung] == ["dense"] and rung[0].pair == "26M-8.19Ktok-s0"
    assert "1 pairs" not in format_plan(plan)


def test_fingerprint_follows_the_rank_layout_not_the_micro_batch(tmp_path):
    from leviathan.config import compose
    from leviathan.data import fingerprint

    data = compose("train", [f"paths.data_dir={tmp_path}"]).data
    one = fingerprint(data, batch_size=4, windows=16)
    assert one == fingerprint(data, batch_size=8, windows=16)  # micro-batch does not matter
    assert one != fingerprint(data, batch_size=4, windows=16, world_size=2)  # layout does
