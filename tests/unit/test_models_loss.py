"""The lean (chunked) head + loss equals the plain all-logits path: loss and gradients, for every
arm and head, the padded ids past the tokenizer's 200,019 included; the training step uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leviathan.models import ModelConfig, build_model
from leviathan.models.loss import linear_cross_entropy, plain_cross_entropy
from leviathan.training.config import TrainConfigError, TrainerConfig
from leviathan.training.step import LossOf, TrainStep

SMALL_LEV = {"d_seed": 8, "n_modes": 2, "order": 2, "hidden": 8}  # V_pad = 200,376 stays
KHRONOS = {"form": "khronos", "d_seed": 8, "heads": 2, "knots": 4, "rank": 4}
# every arm and head (dense untied: also decoupled's dense_untied control), both LEV forms
HEADS = [("dense", "untied"), ("dense", "tied"), ("leviathan", "untied"),
         ("leviathan", "generator"), ("factorized", "untied"), ("khronos", "untied")]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def tiny_model(arm: str, head: str, seed: int = 0):
    """arm "khronos": the Leviathan arm with LEV's khronos form."""
    torch.manual_seed(seed)
    lev = KHRONOS if arm == "khronos" else SMALL_LEV
    cfg = ModelConfig(arm="leviathan" if arm == "khronos" else arm, head=head, d_model=16,
                      n_layers=1, n_heads=2, max_seq_len=16, lev=lev)
    return build_model(cfg)


def batch_with_padded_targets(cfg: ModelConfig, seed: int = 1) -> torch.Tensor:
    """(2, 13) ids: ordinary ids and, as targets, ids in [vocab_size, padded_vocab)."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, cfg.vocab_size, (2, 13), generator=g)
    b[0, 3:7] = torch.arange(cfg.vocab_size, cfg.vocab_size + 4)  # 200,019 .. 200,022
    b[1, -2:] = torch.tensor([cfg.padded_vocab - 1, cfg.padded_vocab - 2])
    return b


@pytest.mark.parametrize("arm,head", HEADS)
def test_lean_loss_and_gradients_equal_plain(arm, head):
    model = tiny_model(arm, head)
    batch = batch_with_padded_targets(model.cfg)
    x, y = batch[:, :-1], batch[:, 1:]
    assert (y >= model.cfg.vocab_size).sum() >= 5 and model.cfg.padded_vocab == 200_376
    results = {}
    for impl in ("plain", "lean"):
        model.zero_grad(set_to_none=True)
        h = model.hidden(x)  # (B, T, D)
        w = model.head_weight()  # (V_pad, D): a parameter, or LEV's table (a non-leaf)
        h.retain_grad()
        w.retain_grad()
        if impl == "plain":  # = F.cross_entropy(model(x), y): test_plain_reference_is_...
            loss = plain_cross_entropy(h, w, y)
        else:
            loss = linear_cross_entropy(h, w, y, chunk=5)  # 24 tokens: 5 chunks, one short
        (loss / 4).backward()  # a gradient-accumulation scale, as Lightning applies it
        params = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[impl] = (loss.detach(), h.grad.clone(), w.grad.clone(), params)
    (lp, hp, wp, pp), (ll, hl, wl, pl) = results["plain"], results["lean"]
    assert rel(ll, lp) < 1e-5
    assert rel(hl, hp) < 1e-5 and rel(wl, wp) < 1e-5
    padded = slice(model.cfg.vocab_size, model.cfg.padded_vocab)
    assert wp[padded].abs().sum() > 0  # padded ids are ordinary logits: they get gradient
    assert rel(wl[padded], wp[padded]) < 1e-5
    assert pp.keys() == pl.keys() and len(pp) == len(list(model.parameters()))
    for name in pp:
        assert rel(pl[name], pp[name]) < 1e-5, name


def test_khronos_generator_head_both_paths_as_close_to_fp64():
    """The khronos generator's table at init: its rows share ~99.9% of their norm (a common mean
    row), so dL/dh = softmax @ W - W_y cancels ~3 digits and fp32 is only good to ~1e-5 there
    for either path (CPU GEMM kernels accumulate differently for chunks of 5 rows than for 24).
    Both paths against an fp64 evaluation: the loss and dL/dW to 1e-6, dL/dh to 1e-4."""
    model = tiny_model("khronos", "generator")
    batch = batch_with_padded_targets(model.cfg)
    x, y = batch[:, :-1], batch[:, 1:]
    h0, w0 = model.hidden(x).detach(), model.head_weight().detach()  # (B, T, D), (V_pad, D)
    assert w0.mean(0).norm() > 0.99 * w0.norm(dim=1).mean()  # the near-constant rows
    out = {}
    for name, dtype, fn in (("f64", torch.float64, plain_cross_entropy),
                            ("plain", torch.float32, plain_cross_entropy),
                            ("lean", torch.float32,
                             lambda a, b, c: linear_cross_entropy(a, b, c, chunk=5))):
        h, w = (t.to(dtype).clone().requires_grad_() for t in (h0, w0))
        loss = fn(h, w, y)
        loss.backward()
        out[name] = (loss.detach(), h.grad, w.grad)
    for name in ("plain", "lean"):
        (l, dh, dw), (lr, dhr, dwr) = out[name], out["f64"]
        assert rel(l, lr) < 1e-6 and rel(dw, dwr) < 1e-6, name
        assert rel(dh, dhr) < 1e-4, name


def test_plain_reference_is_the_model_logits_path():
    """The plain reference is what model(x) + F.cross_entropy computes (tied head)."""
    model = tiny_model("dense", "tied")
    batch = batch_with_padded_targets(model.cfg)
    x, y = batch[:, :-1], batch[:, 1:]
    logits_path = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
    reference = plain_cross_entropy(model.hidden(x), model.head_weight(), y)
    assert rel(reference.detach(), logits_path.detach()) == 0


def test_lean_loss_without_autograd_and_bad_chunk():
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(40, 8, generator=g), torch.randn(300, 8, generator=g)
    y = torch.randint(0, 300, (40,), generator=g)
    with torch.no_grad():
        assert rel(linear_cross_entropy(h, w, y, chunk=7), plain_cross_entropy(h, w, y)) < 1e-6
    with pytest.raises(ValueError, match="trainer.loss_chunk"):
        linear_cross_entropy(h, w, y, chunk=0)


def test_bf16_autocast_tolerance():
    """Under bf16 autocast both paths run the matmuls in bf16 and the softmax in fp32: the
    loss agrees within 1e-3 and the gradients within 1e-2 (relative norms; measured here: 1e-7,
    and 3e-8 / 2e-3 for h / W, whose chunks the lean path sums in fp32)."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(64, 32, generator=g).requires_grad_()
    w = (torch.randn(5000, 32, generator=g) * 0.2).requires_grad_()
    y = torch.randint(0, 5000, (64,), generator=g)
    out = {}
    for name, fn in (("plain", plain_cross_entropy),
                     ("lean", lambda a, b, c: linear_cross_entropy(a, b, c, chunk=16))):
        h.grad = w.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn(h, w, y)
        loss.backward()
        assert h.grad.dtype == w.grad.dtype == torch.float32
        out[name] = (loss.detach().float(), h.grad.clone(), w.grad.clone())
    (lp, hp, wp), (ll, hl, wl) = out["plain"], out["lean"]
    assert rel(ll, lp) < 1e-3
    assert rel(hl, hp) < 1e-2 and rel(wl, wp) < 1e-2


def test_trainer_loss_keys_are_validated():
    with pytest.raises(TrainConfigError, match="trainer.loss_impl"):
        TrainerConfig(loss_impl="fused")
    with pytest.raises(TrainConfigError, match="trainer.loss_chunk"):
        TrainerConfig(loss_chunk=0)
    assert TrainerConfig().loss_impl == "chunked"  # the lean loss is the default


@pytest.mark.slow
@pytest.mark.parametrize("arm,head", [("dense", "tied"), ("leviathan", "untied"),
                                      ("factorized", "untied")])
def test_training_steps_match_the_plain_loss(arm, head):
    """Four AdamW steps (clip, guard) with the chunked loss track the plain loss's steps."""
    g = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, 200_019, (2, 17), generator=g) for _ in range(4)]
    runs = {}
    for impl in ("plain", "chunked"):
        model = tiny_model(arm, head)
        tc = TrainerConfig(global_batch=4, micro_batch=2, lr=1e-3, loss_impl=impl,
                           loss_chunk=6)
        step = TrainStep(model, tc)
        stats = [step([batches[i], batches[(i + 1) % 4]]) for i in range(4)]
        runs[impl] = (stats, torch.cat([p.detach().flatten() for p in model.parameters()]))
    (sp, pp), (sc, pc) = runs["plain"], runs["chunked"]
    for a, b in zip(sp, sc, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert sc[-1]["loss"] < sc[0]["loss"]  # it trains
    assert rel(pc, pp) < 1e-5


def test_loss_of_reads_the_hidden_states_not_the_logits(monkeypatch):
    model = tiny_model("dense", "untied")
    batch = batch_with_padded_targets(model.cfg)
    monkeypatch.setattr(model, "forward", lambda *_: pytest.fail("chunked loss built logits"))
    loss = LossOf(model, TrainerConfig(loss_chunk=4))(batch)
    x, y = batch[:, :-1], batch[:, 1:]
    assert rel(loss.detach(), plain_cross_entropy(model.hidden(x), model.head_weight(), y)
               .detach()) < 1e-6
