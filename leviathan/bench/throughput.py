"""`python -m leviathan.bench throughput`: Leviathan vs Dense training tokens/s on this machine.

An iso-body pair (same width and depth, o200k_base padded to 200,376; Dense head untied, the
Leviathan head untied) is trained in one process by training's own step (leviathan.training.step:
the lean chunked loss by default, AdamW groups, clipping, the non-finite guard; --loss-impl plain
for the all-logits loss), alternating arms step by step (the
order flips every round, ABBA) so that a noisy, shared machine slows both alike. After warm-up
the median step time of each arm gives its tokens/s, and ratio = their quotient (the median of
the per-round ratios and that of the fastest steps are printed too, as checks against
noise). Batches are token ids drawn
from a Zipf law over the tokenizer's ids (like text: many repeats, so LEV's once-per-distinct-id
evaluation sees a realistic number of distinct ids); `--ids uniform` is the worst case for LEV.
The last line printed is one JSON object with dense_tokens_per_s, leviathan_tokens_per_s, ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import TYPE_CHECKING

from leviathan.models import ModelConfig, count_params
from leviathan.training.config import LOSS_IMPLS, TrainerConfig

if TYPE_CHECKING:  # torch, the models and the step are imported where used: `--help` needs none
    import torch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench throughput",
                                description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="measured steps per arm")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps per arm first")
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--lev-impl", default="matmul", choices=("matmul", "bag"))
    p.add_argument("--ids", default="zipf", choices=("zipf", "uniform"),
                   help="how batch token ids are drawn")
    p.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent for --ids zipf")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--loss-impl", default="chunked", choices=LOSS_IMPLS,
                   help="trainer.loss_impl: the training loss")
    p.add_argument("--loss-chunk", type=int, default=TrainerConfig.loss_chunk,
                   help="trainer.loss_chunk: tokens per chunk of the chunked loss")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for key in ("steps", "batch", "seq_len", "d_model", "n_layers", "n_heads", "loss_chunk"):
        if getattr(args, key) <= 0:
            p.error(f"--{key.replace('_', '-')} must be positive")
    return args


def token_batches(vocab_size: int, shape: tuple[int, int], n: int, *, ids: str = "zipf",
                  zipf_s: float = 1.1, seed: int = 0) -> list[torch.Tensor]:
    """n fixed batches of token ids of `shape` (batch, seq_len + 1): Zipf-distributed over the
    ids (frequent ids spread over the id range by a fixed permutation) or uniform."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if ids == "uniform":
        return [torch.randint(0, vocab_size, shape, generator=g) for _ in range(n)]
    ranks = torch.arange(1, vocab_size + 1, dtype=torch.float64)
    probs = ranks.pow(-zipf_s)
    perm = torch.randperm(vocab_size, generator=g)
    out = []
    for _ in range(n):
        draws = torch.multinomial(probs, shape[0] * shape[1], replacement=True, generator=g)
        out.append(perm[draws].view(shape))
    return out


def make_batches(args, vocab_size: int, n: int) -> list[torch.Tensor]:
    """n fixed (batch, seq_len + 1) batches of token ids."""
    return token_batches(vocab_size, (args.batch, args.seq_len + 1), n, ids=args.ids,
                         zipf_s=args.zipf_s, seed=args.seed)


class Arm:
    """One model and training's own step (loss, AdamW, clip, guard) on the shared batches."""

    def __init__(self, name: str, cfg: ModelConfig, device: torch.device, args) -> None:
        from leviathan.models.build import build_model
        from leviathan.training.step import TrainStep

        self.name, self.cfg = name, cfg
        self.model = build_model(cfg).to(device).train()
        tc = TrainerConfig(accelerator=device.type, lr=args.lr, min_lr=0.0,
                           global_batch=args.batch, micro_batch=args.batch,
                           loss_impl=args.loss_impl, loss_chunk=args.loss_chunk)
        self.train_step = TrainStep(self.model, tc)
        self.times: list[float] = []
        self.losses: list[float] = []

    def step(self, batch: torch.Tensor, record: bool) -> None:
        t0 = time.perf_counter()
        loss_value = self.train_step([batch])["loss"]  # .item() synchronises an accelerator
        if record:
            self.times.append(time.perf_counter() - t0)
            self.losses.append(loss_value)


def time_lev(lev: torch.nn.Module, batches: list[torch.Tensor], steps: int) -> float:
    """Median seconds of LEV's forward + backward alone on the bench batches."""
    import torch

    times = []
    for i in range(steps + 1):
        x = batches[i % len(batches)][:, :-1]
        t0 = time.perf_counter()
        lev(x).float().square().mean().backward()
        lev.zero_grad(set_to_none=True)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    base = ModelConfig(arm="dense", head="untied", ladder="bench", size="bench",
                       d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                       max_seq_len=args.seq_len, lev={"impl": args.lev_impl})
    arms = [Arm("dense", base, device, args),
            Arm("leviathan", base.replace(arm="leviathan"), device, args)]
    rounds = args.warmup + args.steps
    batches = [b.to(device) for b in make_batches(args, base.vocab_size, min(rounds, 8))]
    distinct = statistics.mean(int(b[:, :-1].unique().numel()) for b in batches)
    tokens = args.batch * args.seq_len
    for arm in arms:
        n = count_params(arm.cfg)
        print(f"{arm.name:9s}: {n.total / 1e6:7.2f}M params (input {n.input / 1e6:.2f}M, head "
              f"{n.head / 1e6:.2f}M, body {n.body / 1e6:.2f}M)")
    print(f"batch {args.batch} x {args.seq_len} = {tokens} tokens ({args.ids} ids, "
          f"{distinct:.0f} distinct per batch), {torch.get_num_threads()} threads, "
          f"{args.warmup} warm-up + {args.steps} measured steps per arm, alternating; "
          f"loss {args.loss_impl}" + (f" (chunk {args.loss_chunk})"
                                      if args.loss_impl == "chunked" else ""))
    for i in range(rounds):
        order = arms if i % 2 == 0 else arms[::-1]  # ABBA: neither arm always goes first
        for arm in order:
            arm.step(batches[i % len(batches)], record=i >= args.warmup)
        if i >= args.warmup:
            print(f"step {i - args.warmup + 1:3d}: " + "  ".join(
                f"{a.name} {a.times[-1]:.3f}s loss {a.losses[-1]:.3f}" for a in arms), flush=True)
    result = {}
    for arm in arms:
        med = statistics.median(arm.times)
        result[f"{arm.name}_tokens_per_s"] = round(tokens / med, 1)
        result[f"{arm.name}_step_s_median"] = round(med, 4)
        print(f"{arm.name:9s}: median step {med:.3f}s (min {min(arm.times):.3f}s, max "
              f"{max(arm.times):.3f}s) -> {tokens / med:,.0f} tokens/s")
    result["ratio"] = round(result["leviathan_tokens_per_s"] / result["dense_tokens_per_s"], 4)
    lev_s = time_lev(arms[1].model.embed, batches, args.steps)
    result["lev_generator_s_median"] = round(lev_s, 4)
    print(f"LEV generator alone (forward + backward, once per distinct id): {lev_s * 1e3:.1f} ms "
          f"per step = {100 * lev_s / result['leviathan_step_s_median']:.1f}% of the Leviathan "
          f"step")
    paired = statistics.median(d / l for d, l in zip(arms[0].times, arms[1].times, strict=True))
    best = min(arms[0].times) / min(arms[1].times)
    result["ratio_paired_median"] = round(paired, 4)
    result["ratio_best_steps"] = round(best, 4)
    print(f"Leviathan/Dense throughput ratio: {result['ratio']:.3f} (ratio of medians; median of "
          f"the per-round ratios {paired:.3f}; fastest steps {best:.3f})")
    result.update(steps=args.steps, warmup=args.warmup, batch=args.batch, seq_len=args.seq_len,
                  d_model=args.d_model, n_layers=args.n_layers, ids=args.ids,
                  distinct_ids_per_batch=round(distinct, 1), threads=torch.get_num_threads(),
                  device=str(device), lev_impl=args.lev_impl, loss_impl=args.loss_impl,
                  loss_chunk=args.loss_chunk)
    print(json.dumps(result))
    return 0
