"""Compilation that holds up over a run, and a training step that never waits on the device
(issue 26, points 2 and 3), checked on the CPU with the same code the GPU runs.

LanguageModel.compile_regions compiles each block (one graph for all), the final norm and
LEV's generator with a symbolic row count, and leaves torch.unique (whose output size depends
on the data) eager between them; the chunked loss's softmax gradient is compiled too
(models/loss.py, fused=True). So the compiled step has no graph break and does not recompile
as the number of distinct ids changes from step to step.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from leviathan.bench.shapes import arm_config
from leviathan.models.build import build_model
from leviathan.training.config import TrainerConfig
from leviathan.training.step import TrainStep


def tiny(arm: str, form: str = "blocks"):
    """The debug model at the shape tests/integration/test_train_gpu_path.py trains (d_model 32,
    2 heads), so that inductor's cache serves both (they share the `compile` xdist group)."""
    grid = "isoparametric" if arm == "factorized" else "smoke_tiny"
    cfg = arm_config(f"debug_small@{grid}", arm)
    cfg = dataclasses.replace(cfg, d_model=32, n_heads=2)
    if arm == "leviathan":
        cfg = dataclasses.replace(cfg, lev=dataclasses.replace(cfg.lev, form=form))
    torch.manual_seed(0)
    return build_model(cfg)


@pytest.mark.slow
@pytest.mark.xdist_group("compile")
def test_compiled_step_does_not_recompile_as_distinct_ids_vary(form="blocks"):
    """(The khronos form's regions are checked for breaks below and trained compiled in
    tests/integration/test_train_gpu_path.py; its dynamic-shape compile is the slow one.)"""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny("leviathan", form)
    tc = TrainerConfig(compile=True, micro_batch=2, global_batch=2, loss_chunk=4096,
                       fused_adamw=True)
    step = TrainStep(model, tc, autocast=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    distinct, graphs = [], []
    for i in range(20):  # ids from a range that widens and narrows: U changes every step
        hi = 40 + 97 * ((i * 7) % 20)
        batch = torch.randint(0, hi, (2, 33), generator=g)
        distinct.append(batch[:, :-1].unique().numel())
        out = step([batch])
        assert torch.isfinite(torch.tensor(out["loss"]))
        graphs.append(counters["stats"]["unique_graphs"])
    assert len(set(distinct)) >= 8, distinct
    assert graphs[0] > 0  # the compiled regions ran
    # after the first step (forward, backward, the fused loss), at most a small bounded number of
    # graphs more (measured: none); a recompile per distinct-id count would add ~19
    assert graphs[-1] - graphs[1] <= 2, graphs
    assert not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.parametrize("arm,form", [("dense", ""), ("leviathan", "blocks"),
                                      ("leviathan", "khronos"), ("factorized", "")])
def test_compiled_regions_have_no_graph_breaks(arm, form):
    """torch._dynamo.explain over each region compile_regions compiles."""
    from leviathan.models.loss import _logit_grad

    model = tiny(arm, form or "blocks")
    ids = torch.randint(0, model.cfg.vocab_size, (2, 16))
    regions = [(model.blocks[0], (torch.randn(2, 16, model.cfg.d_model),)),
               (model.norm, (torch.randn(2, 16, model.cfg.d_model),))]
    if arm == "leviathan":
        regions.append((model.embed._generate, (ids.flatten().unique(),)))
    if arm == "factorized":
        regions.append((model.embed, (ids,)))
    regions.append((_logit_grad, (torch.randn(8, 64), torch.randint(0, 64, (8,)), 1 / 8,
                                  torch.bfloat16)))
    for fn, args in regions:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            explained = torch._dynamo.explain(fn)(*args)
        assert explained.graph_break_count == 0, (fn, explained.break_reasons)
        assert explained.graph_count == 1, fn


def test_fused_loss_equals_the_eager_chunks():
    """fused=True (trainer.compile) computes the same loss and gradients as the eager chunks."""
    from leviathan.models.loss import linear_cross_entropy

    g = torch.Generator().manual_seed(1)
    h = torch.randn(50, 16, generator=g, requires_grad=True)
    w = torch.randn(300, 16, generator=g, requires_grad=True)
    y = torch.randint(0, 300, (50,), generator=g)
    got = {}
    for fused in (False, True):
        h.grad = w.grad = None
        loss = linear_cross_entropy(h, w, y, chunk=16, fused=fused)  # 3 full chunks + 2 rows
        loss.backward()
        got[fused] = (loss.detach(), h.grad.clone(), w.grad.clone())
    for a, b in zip(got[False], got[True], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["dense", "leviathan"])
def test_a_non_logging_training_step_never_reads_the_device(tmp_path, data_dir, monkeypatch,
                                                            arm):
    """The real job (trainer=gpu_on_cpu): every Tensor.item/.tolist/.cpu/... call made during
    one optimizer step that neither logs, validates nor checkpoints is counted: none."""
    import lightning.pytorch as pl
    from helpers.train import compose

    from leviathan.training import engine
    from leviathan.training.run import train

    calls: list[str] = []
    saved = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def counting(name):
        def wrapper(self, *a, **kw):
            calls.append(name)
            return saved[name](self, *a, **kw)
        return wrapper

    class CountOneStep(pl.Callback):  # micro-batches 2 and 3: optimizer step 2 of 6
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:
                for name in SYNCS:
                    setattr(torch.Tensor, name, counting(name))
            if batch_idx == 4:
                self.restore()

        def restore(self):
            for name, fn in saved.items():
                setattr(torch.Tensor, name, fn)

    counter = CountOneStep()
    build = engine.build_trainer
    monkeypatch.setattr(engine, "build_trainer",
                        lambda tc, plan, run_dir, callbacks: build(tc, plan, run_dir,
                                                                   [*callbacks, counter]))
    head = ["model.arm=leviathan", "model.head=untied"] if arm == "leviathan" else \
        ["model.arm=dense", "model.head=tied"]
    cfg = compose(["model=debug_small", "data.tokenizer=debug_2k", "model.d_model=32",
                   "model.n_heads=2", "data=debug", "data.seq_len=32", "trainer=gpu_on_cpu",
                   "trainer.compile=false", "trainer.micro_batch=2", "trainer.global_batch=4",
                   "trainer.max_steps=6", "trainer.warmup_steps=1", "trainer.log_every=5",
                   "trainer.val_every=100", "trainer.ckpt_every=100", "trainer.val_batches=2",
                   "tracking.enabled=false", f"paths.data_dir={data_dir}",
                   f"paths.scratch_dir={tmp_path}", *head])
    try:
        summary = train(cfg)
    finally:
        counter.restore()
    assert summary["status"] == "finished"
    assert calls == [], f"host synchronisations in a non-logging step: {calls}"
