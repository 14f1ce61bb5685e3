"""trainer=gpu's code path on the CPU (issue 26): the real job with only the device changed.

`trainer=gpu_on_cpu` is conf/trainer/gpu.yaml with accelerator=cpu: bf16-mixed autocast, SDPA,
fused AdamW, the chunked loss at the GPU chunk size (its softmax gradient fused), regional
torch.compile through inductor. Every arm's compiled run agrees with its eager run within bf16
tolerances; a compiled run stopped by a real SIGTERM and resumed equals the compiled run taken
straight (exact resume). The runs record to their run folder only (tracking.enabled=false:
the path a bare GPU box takes), which this also checks.
"""

from __future__ import annotations

import os
import signal

import pytest
from helpers.train import compose, run_cli

STEPS = 6
ARMS = {  # arm -> overrides (both LEV forms; the factorized control on its isoparametric depth)
    "dense": ["model.arm=dense", "model.head=untied"],
    "leviathan-blocks": ["model.arm=leviathan", "model.head=untied", "model.lev.form=blocks"],
    "leviathan-khronos": ["model.arm=leviathan", "model.head=untied", "model.lev.form=khronos"],
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


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("arm", list(ARMS))
def test_gpu_settings_compiled_match_eager(tmp_path, data_dir, arm):
    """Every arm trains through the compiled regions (and the fused loss) as eager does."""
    from leviathan.training.run import train

    scratch = tmp_path / "scratch"
    compiled = train(compose(overrides(data_dir, scratch, arm, "run_name=compiled")))
    eager = train(compose(overrides(data_dir, scratch, arm, "run_name=eager",
                                    "trainer.compile=false")))
    runs = scratch / "runs"
    assert losses(runs / "eager") == pytest.approx(losses(runs / "compiled"), rel=BF16_RTOL)
    assert eager["final_val_loss"] == pytest.approx(compiled["final_val_loss"], rel=BF16_RTOL)
    assert (runs / "compiled" / "tracking.json").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_gpu_settings_compiled_sigterm_then_exact_resume(tmp_path, data_dir):
    """A compiled Leviathan run stopped by a real SIGTERM at step 3 (held there until it comes)
    and started again equals the same run taken straight, step for step. What a resume restores
    (weights, AdamW, data position, RNG: test_train_run.py) does not depend on the arm; the
    compiled regions and the fused loss are what this adds."""
    from leviathan.training.run import train

    scratch = tmp_path / "scratch"
    arm = "leviathan-blocks"
    straight = train(compose(overrides(data_dir, scratch, arm, "run_name=straight")))
    split = overrides(data_dir, scratch, arm, "run_name=split")
    proc = run_cli(split, env=dict(os.environ, LEVIATHAN_REHEARSE_PREEMPTION="split@3"))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 3/"):
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(seen) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "tracking.enabled=false: no MLflow" in out
    resumed = train(compose(split))  # the same command again: resumes at step 4
    runs = scratch / "runs"
    assert losses(runs / "split") == pytest.approx(losses(runs / "straight"), rel=1e-6, abs=1e-6)
    assert resumed["final_val_loss"] == pytest.approx(straight["final_val_loss"], rel=1e-6)
