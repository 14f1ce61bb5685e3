"""What a run costs as it ran (summary.json `cost`, leviathan.training.clock): the steady step
leaves each attempt's warm-up out, and a resumed run adds up its attempts through the
checkpoint's state."""

from __future__ import annotations

import pytest

from leviathan.training.clock import RunClock, warm_steps
from leviathan.training.config import TrainerConfig
from leviathan.training.plan import RunPlan


def plan(steps: int = 20) -> RunPlan:
    return RunPlan(seq_len=64, world_size=2, micro_batch=4, accumulation=2, global_batch=16,
                   tokens_per_step=1024, budget_tokens=1024 * steps, max_steps=steps,
                   warmup_steps=1, n_params={"total": 1}, flops_per_token=1.0)


def test_warm_up_is_a_tenth_of_the_steps_between_1_and_10():
    assert [warm_steps(n) for n in (1, 2, 19, 20, 55, 100, 10_000)] == [1, 1, 1, 2, 5, 10, 10]


def test_the_steady_step_leaves_the_warm_up_out_and_attempts_add_up():
    tc = TrainerConfig(compile=True, precision="bf16-mixed")
    first = RunClock(20, started=0.0)  # warm: 2 steps
    assert first.opens_steady() is False
    first.step(30.0)  # compiling
    assert first.opens_steady() is True  # the boundary that ends the warm-up: synchronised
    for _ in range(5):
        first.step(0.5)
    state = first.state()  # what the checkpoint after step 6 carries
    assert state["attempts"] == 1 and state["steady_steps"] == 4 and state["steps"] == 6

    second = RunClock(20, started=0.0)  # the resumed attempt
    second.restore({**state, "wall_s": 100.0})
    second.device = "NVIDIA H200"
    second.step(20.0)  # compiling again: warm-up of this attempt too
    second.step(20.0)
    for _ in range(12):
        second.step(0.25)
    cost = second.summary(plan(), wall_s=50.0, tc=tc)
    assert cost["attempts"] == 2 and cost["steps_timed"] == 20 and cost["steady_steps"] == 16
    assert cost["step_s"] == pytest.approx((4 * 0.5 + 12 * 0.25) / 16)
    assert cost["tokens_per_s"] == pytest.approx(1024 / 2 / cost["step_s"])  # per device
    assert cost["wall_s"] == 150.0 and cost["device_s"] == 300.0  # 2 devices
    assert cost["train_s"] == pytest.approx(30 + 2.5 + 40 + 3)
    assert (cost["device"], cost["compile"], cost["precision"], cost["accumulation"]) == (
        "NVIDIA H200", True, "bf16-mixed", 2)


def test_a_run_too_short_for_a_steady_state_says_so():
    clock = RunClock(1, started=0.0)
    clock.step(2.0)
    cost = clock.summary(plan(1), wall_s=3.0, tc=TrainerConfig())
    assert cost["steady"] is False and cost["step_s"] == 2.0 and cost["device"] == "cpu"
