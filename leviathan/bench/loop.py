"""`python -m leviathan.bench loop`: what Lightning's Trainer costs per optimizer step.

The same model (same initial weights), the same batches and the same constant learning rate are
trained twice per round: once by training's real Lightning path (engine.build_trainer: the Trainer
as runs build it, LanguageModelModule, ResumableBatches and the run's StepCallback, validation
and periodic checkpoints off) and once by the plain-torch TrainStep (leviathan.training.step:
the same loss, AdamW groups, clipping and guard, no Lightning). Rounds alternate which loop goes
first (ABBA). The seconds between optimizer-step boundaries after warm-up give each loop's
median step time; `overhead` = trainer / step - 1. Both loops must end at the same loss (they
take the same steps), which the bench checks and prints. The last line is one JSON object with
trainer_step_s, plain_step_s, overhead, loss_trainer, loss_plain.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from leviathan.bench.throughput import token_batches
from leviathan.models import ModelConfig, count_params
from leviathan.training.config import TrainerConfig
from leviathan.training.plan import plan_run

if TYPE_CHECKING:  # torch, the models and the step are imported where used: `--help` needs none
    import torch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench loop",
                                description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="measured optimizer steps per loop "
                   "and round")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps first in each run")
    p.add_argument("--rounds", type=int, default=2, help="rounds (the order flips each round)")
    p.add_argument("--arm", default="dense", choices=("dense", "leviathan"))
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=None,
                   help="padded vocabulary (default: o200k_base padded, 200,376)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for key in ("steps", "rounds", "batch", "seq_len", "d_model", "n_layers", "n_heads"):
        if getattr(args, key) <= 0:
            p.error(f"--{key.replace('_', '-')} must be positive")
    if args.warmup < 1:
        p.error("--warmup must be at least 1 (the first step's time includes setup)")
    return args


class _Batches:
    """A fixed list of micro-batches as a stream (what ResumableBatches wraps)."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches, self.i = batches, 0

    def __iter__(self):
        while self.i < len(self.batches):
            self.i += 1
            yield self.batches[self.i - 1]

    def state_dict(self) -> dict:
        return {"i": self.i}

    def load_state_dict(self, state: dict) -> None:
        self.i = int(state["i"])


def _boundary_clock():
    import lightning.pytorch as pl
    import torch

    class Clock(pl.Callback):
        """perf_counter at every optimizer-step boundary (first among the callbacks)."""

        def __init__(self) -> None:
            self.stamps: list[float] = []
            self._seen = -1

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step != self._seen:
                self._seen = trainer.global_step
                if pl_module.device.type == "cuda":
                    torch.cuda.synchronize()
                self.stamps.append(time.perf_counter())

    return Clock()


def run_trainer(model, tc, batches, run_dir: Path) -> tuple[list[float], float]:
    """Train len(batches) steps through the Trainer as runs build it; (step times, last loss)."""
    from leviathan.training.batches import ResumableBatches
    from leviathan.training.callbacks import StepCallback
    from leviathan.training.engine import build_trainer
    from leviathan.training.module import LanguageModelModule

    n = count_params(model.cfg)
    plan = plan_run(tc, batches[0].shape[1] - 1, n.as_dict(), 0.0)
    module = LanguageModelModule(model, tc, plan, ResumableBatches(_Batches(batches)))
    clock = _boundary_clock()
    step_cb = StepCallback(run_dir=run_dir, plan=plan, tc=tc)  # no tracker: says nothing
    trainer = build_trainer(tc, plan, run_dir, [clock, step_cb])
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=module.batches)
    stamps = [t0, *clock.stamps]
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], module.last["train/loss"]


def run_plain(model, tc, batches) -> tuple[list[float], float]:
    from leviathan.training.step import TrainStep

    step = TrainStep(model, tc)
    times, loss = [], float("nan")
    for b in batches:
        t0 = time.perf_counter()
        loss = step([b])["loss"]  # .item() inside synchronises an accelerator
        times.append(time.perf_counter() - t0)
    return times, loss


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from leviathan.models.build import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    device = torch.device(args.device)
    extra = {"vocab_pad_to": args.vocab, "vocab_size": args.vocab} if args.vocab else {}
    cfg = ModelConfig(arm=args.arm, head="untied", ladder="bench", size="bench",
                      d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                      max_seq_len=args.seq_len, **extra)
    n_steps = args.warmup + args.steps
    tc = TrainerConfig(accelerator="gpu" if device.type == "cuda" else "cpu", lr=1e-3,
                       min_lr=1e-3, schedule="constant", warmup_steps=0, max_steps=n_steps,
                       global_batch=args.batch, micro_batch=args.batch, val_every=10**9,
                       ckpt_every=10**9, log_every=10**9)
    torch.manual_seed(args.seed)
    init = build_model(cfg)
    batches = [b.to(device) for b in token_batches(cfg.vocab_size, (args.batch, args.seq_len + 1),
                                                   n_steps, seed=args.seed)]
    print(f"{args.arm} {count_params(cfg).total / 1e6:.2f}M params, batch {args.batch} x "
          f"{args.seq_len}, {torch.get_num_threads()} threads, {device}; {args.rounds} rounds of "
          f"{args.warmup} warm-up + {args.steps} measured steps per loop, alternating")
    times: dict[str, list[float]] = {"trainer": [], "plain": []}
    losses: dict[str, float] = {}
    for r in range(args.rounds):
        order = ("trainer", "plain") if r % 2 == 0 else ("plain", "trainer")
        for loop in order:
            model = copy.deepcopy(init).to(device).train()
            if loop == "trainer":
                with tempfile.TemporaryDirectory() as d:
                    t, losses[loop] = run_trainer(model, tc, batches, Path(d))
            else:
                t, losses[loop] = run_plain(model, tc, batches)
            if len(t) != n_steps:
                raise RuntimeError(f"{loop}: {len(t)} step times for {n_steps} steps")
            times[loop] += t[args.warmup:]
            print(f"round {r + 1} {loop:7s}: median {statistics.median(t[args.warmup:]):.4f} s "
                  f"per step, loss after {n_steps} steps {losses[loop]:.6f}", flush=True)
    tr, pl_ = statistics.median(times["trainer"]), statistics.median(times["plain"])
    result = {"trainer_step_s": tr, "plain_step_s": pl_,
              "overhead": round(tr / pl_ - 1, 4), "trainer_overhead_ms": round(1e3 * (tr - pl_), 2),
              "loss_trainer": losses["trainer"], "loss_plain": losses["plain"],
              "loss_abs_diff": abs(losses["trainer"] - losses["plain"]), "arm": args.arm,
              "steps": args.steps, "rounds": args.rounds, "batch": args.batch,
              "seq_len": args.seq_len, "d_model": args.d_model, "n_layers": args.n_layers,
              "threads": torch.get_num_threads(), "device": str(device)}
    print(f"Trainer {tr * 1e3:.1f} ms vs plain step {pl_ * 1e3:.1f} ms per optimizer step: "
          f"overhead {100 * (tr / pl_ - 1):+.1f}% ({1e3 * (tr - pl_):+.1f} ms); final losses "
          f"{losses['trainer']:.6f} vs {losses['plain']:.6f}")
    print(json.dumps(result))
    return 0
