"""trainer=gpu's code path on the CPU (issue 26): the real job with only the device changed.

`trainer=gpu_on_cpu` is conf/trainer/gpu.yaml with accelerator=cpu: bf16-mixed autocast, SDPA,
fused AdamW, the chunked loss at the GPU chunk size (its softmax gradient fused), regional
torch.compile through inductor. Every arm's compiled run agrees with its eager run within bf16
tolerances; a compiled run stopped by a real SIGTERM and resumed equals the compiled run taken
straight (exact resume). The runs record to their run folder only (tracking.enabled=false:
the path a bare GPU box takes), which this also checks.
"""

from __future__ import annotations

import logging
import os
import signal

import pytest
from helpers.train import compose

STEPS = 6
ARMS = {  # arm -> overrides (both LEV forms; the factorized control on its isoparametric depth)
    "dense": ["model.arm=dense", "model.head=untied"],
    "leviathan-blocks": ["model.arm=leviathan", "model.head=untied", "model.lev.form=blocks"],
    "leviathan-khronos": ["model.arm=leviathan", "model.head=untied", "model.lev.form=khronos",
                          "model.lev.heads=2"],  # 2 of 8 heads: its compile is the slow one
    "factorized": ["model.arm=factorized", "model.head=untied",
                   "model.depth_rule=isoparametric"],
}
# bf16 autocast: the compiled graphs fuse and reorder bf16 arithmetic, so the two paths differ
# by bf16 rounding that grows slowly over steps (measured here: < 2e-3 relative at 6 steps)
BF16_RTOL = 1e-2


def overrides(data_dir, scratch, arm: str, *extra: str) -> list[str]:
    return ["model=debug_small", "data.tokenizer=debug_2k", "model.d_model=32",
            "model.n_heads=2", "data=debug", "data.seq_len=32", "trainer=gpu_on_cpu",
            "trainer.micro_batch=2", "trainer.global_batch=4", f"trainer.max_steps={STEPS}",
            "trainer.warmup_steps=1", "trainer.val_every=100", "trainer.val_batches=2",
            "trainer.ckpt_every=100", "trainer.log_every=1", "tracking.enabled=false",
            f"paths.data_dir={data_dir}", f"paths.scratch_dir={scratch}", *ARMS[arm], *extra]


def losses(run_dir) -> list[float]:
    from leviathan.tracking.folder import read_metrics

    rows = [r for r in read_metrics(run_dir) if "train/loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), rows
    return [r["train/loss"] for r in rows]


# One process for every compiled test (the `compile` xdist group): the blocks of every arm have
# one shape, so the graphs inductor compiled for one arm serve the next (its cache), and the
# compile cost is paid about once per region kind, not once per test.
compile_group = pytest.mark.xdist_group("compile")


@pytest.mark.integration
@pytest.mark.slow
@compile_group
def test_gpu_settings_compiled_match_eager_for_every_arm(tmp_path, data_dir):
    """Every arm trains through the compiled regions (and the fused loss) as eager does."""
    from leviathan.training.run import train

    for arm in ARMS:
        scratch = tmp_path / arm
        compiled = train(compose(overrides(data_dir, scratch, arm, "run_name=compiled")))
        eager = train(compose(overrides(data_dir, scratch, arm, "run_name=eager",
                                        "trainer.compile=false")))
        runs = scratch / "runs"
        assert losses(runs / "eager") == pytest.approx(losses(runs / "compiled"),
                                                       rel=BF16_RTOL), arm
        assert eager["final_val_loss"] == pytest.approx(compiled["final_val_loss"],
                                                        rel=BF16_RTOL), arm
        assert (runs / "compiled" / "tracking.json").exists()


class _SigtermWhenHeld(logging.Handler):
    """Sends this process a real SIGTERM when the run holds at its rehearsal step (the run's own
    handler is installed by then): the preemption of a compiled run without a second process
    compiling the same graphs again."""

    def emit(self, record: logging.LogRecord) -> None:
        if "holding at step" in record.getMessage():
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.integration
@pytest.mark.slow
@compile_group
def test_gpu_settings_compiled_sigterm_then_exact_resume(tmp_path, data_dir, monkeypatch):
    """A compiled Leviathan run stopped by a real SIGTERM at step 3 (held there until it comes)
    and started again equals the same run taken straight, step for step. What a resume restores
    (weights, AdamW, data position, RNG; in a new process: test_train_run.py) does not depend on
    the arm; the compiled regions and the fused loss are what this adds."""
    from leviathan.training.run import train
    from leviathan.training.signals import Preempted

    scratch = tmp_path / "scratch"
    arm = "leviathan-blocks"
    straight = train(compose(overrides(data_dir, scratch, arm, "run_name=straight")))
    split = compose(overrides(data_dir, scratch, arm, "run_name=split"))
    monkeypatch.setenv("LEVIATHAN_REHEARSE_PREEMPTION", "split@3")
    handler = _SigtermWhenHeld()
    held = logging.getLogger("leviathan.training.signals")
    held.addHandler(handler)
    try:
        with pytest.raises(Preempted) as stopped:
            train(split)
    finally:
        held.removeHandler(handler)
    assert stopped.value.step == 3 and stopped.value.signum == signal.SIGTERM
    resumed = train(split)  # the same config again: resumes at step 4
    runs = scratch / "runs"
    assert losses(runs / "split") == pytest.approx(losses(runs / "straight"), rel=1e-6, abs=1e-6)
    assert resumed["final_val_loss"] == pytest.approx(straight["final_val_loss"], rel=1e-6)
