"""`python -m leviathan.bench loss`: the plain vs the lean (chunked) head + loss, fwd + bwd.

Each variant runs in a fresh Python process on the same random inputs (h (N, D) and W (V, D),
both needing gradients, targets uniform over all V ids, padded ones included):
  plain      F.cross_entropy(F.linear(h, W).float(), y): all (N, V) logits at once
  lean       leviathan.models.loss.linear_cross_entropy, `--chunk` tokens at a time
  recompute  each chunk under torch.utils.checkpoint (logits recomputed in backward)
  fused      lean with each chunk's softmax gradient torch.compile'd (fused=True: what
             trainer.compile=true trains with); its compilation is the untimed warm-up call
Time: the fastest of --repeats calls after one warm-up call. Peak memory is what the call needs
above its inputs, gradients included. On CUDA: torch.cuda.max_memory_allocated minus the memory
allocated before the call. On CPU: the peak resident set (VmHWM, reset through
/proc/self/clear_refs before each call) minus the resident set before it, with glibc told to
mmap every block >= 64 KiB (MALLOC_MMAP_THRESHOLD_) so that freed memory leaves the resident set.
The last line is one JSON object: plain_peak_mb, lean_peak_mb, plain_s, lean_s, and the
relative differences of the losses and gradient norms (lean vs plain).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("plain", "lean", "recompute", "fused")
CPU_METHOD = "cpu: VmHWM - VmRSS above the inputs (clear_refs reset), fresh process per variant"
CUDA_METHOD = "cuda: max_memory_allocated above the inputs, fresh process per variant"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench loss",
                                description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192, help="N, tokens (rows of h)")
    p.add_argument("--vocab", type=int, default=200376, help="V, the padded vocabulary")
    p.add_argument("--dim", type=int, default=768, help="D, the model width")
    p.add_argument("--chunk", type=int, default=256, help="lean: tokens per chunk")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                   help="fp32, or bf16 autocast over fp32 inputs; auto: bf16 on cuda")
    p.add_argument("--repeats", type=int, default=2, help="timed calls after one warm-up")
    p.add_argument("--variants", default="plain,lean", help=f"comma-separated of {VARIANTS}")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, here
    args = p.parse_args(argv)
    for key in ("tokens", "vocab", "dim", "chunk", "repeats"):
        if getattr(args, key) <= 0:
            p.error(f"--{key} must be positive")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variant_list if v not in VARIANTS]
    if bad or "plain" not in args.variant_list or "lean" not in args.variant_list:
        p.error(f"--variants must name plain and lean (and may add recompute, fused), got "
                f"{args.variants}")
    if args.dtype == "auto":
        args.dtype = "bf16" if args.device.startswith("cuda") else "fp32"
    return args


def _proc_kb(field: str, path: str = "/proc/self/status") -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in {path}")


def _loss_fn(variant: str, chunk: int):
    from leviathan.models.loss import (
        checkpointed_cross_entropy,
        linear_cross_entropy,
        plain_cross_entropy,
    )

    if variant == "plain":
        return plain_cross_entropy
    if variant == "lean":
        return lambda h, w, y: linear_cross_entropy(h, w, y, chunk=chunk)
    if variant == "fused":
        return lambda h, w, y: linear_cross_entropy(h, w, y, chunk=chunk, fused=True)
    return lambda h, w, y: checkpointed_cross_entropy(h, w, y, chunk=chunk)


def worker(args: argparse.Namespace) -> dict:
    """Run one variant in this process; returns its time, peak memory, loss and grad norms."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    g = torch.Generator().manual_seed(args.seed)
    h = (torch.randn(args.tokens, args.dim, generator=g)).to(device).requires_grad_()
    w = (torch.randn(args.vocab, args.dim, generator=g) * args.dim ** -0.5).to(device)
    w.requires_grad_()
    y = torch.randint(0, args.vocab, (args.tokens,), generator=g).to(device)
    fn = _loss_fn(args.worker, args.chunk)
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    times, peaks = [], []
    for i in range(1 + args.repeats):
        h.grad = w.grad = None
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = _proc_kb("VmRSS") * 1024
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = fn(h, w, y)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() if cuda else _proc_kb("VmHWM") * 1024) - before
        if i > 0:  # the warm-up call (a compilation, for fused) is neither timed nor measured
            times.append(dt)
            peaks.append(peak / 2**20)
    return {"variant": args.worker, "s": min(times), "peak_mb": max(peaks),
            "loss": loss.item(), "h_grad_norm": h.grad.norm().item(),
            "w_grad_norm": w.grad.norm().item()}


def _available_mb(device: str) -> float | None:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info()[0] / 2**20 if torch.cuda.is_available() else None
    try:
        return _proc_kb("MemAvailable", "/proc/meminfo") / 1024
    except (OSError, RuntimeError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("bench loss --device cuda needs CUDA, which this machine lacks")
            return 0
    # the plain path peaks at ~2.2 fp32 (N, V) tensors plus dL/dW: refuse what cannot fit
    need_mb = (2.5 * args.tokens * args.vocab + 2 * args.vocab * args.dim) * 4 / 2**20
    avail = _available_mb(args.device)
    if avail is not None and need_mb > 0.8 * avail:
        print(f"bench loss: the plain path needs ~{need_mb:,.0f} MB at --tokens {args.tokens} "
              f"--vocab {args.vocab}, only {avail:,.0f} MB are available: lower --tokens",
              file=sys.stderr)
        return 2
    print(f"N={args.tokens} tokens, V={args.vocab}, D={args.dim}, chunk={args.chunk}, "
          f"{args.dtype} on {args.device}; forward + backward, best of {args.repeats}")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, "-m", "leviathan.bench.loss", *(argv if argv is not None
                                                            else sys.argv[1:])]
    res = {}
    for variant in args.variant_list:
        out = subprocess.run([*cmd, "--worker", variant], env=env, capture_output=True,
                             text=True)
        if out.returncode != 0:
            print(out.stdout + out.stderr, file=sys.stderr)
            raise SystemExit(f"bench loss: the {variant} variant failed")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        res[variant] = r
        print(f"{variant:9s}: {r['s']:.3f}s, peak {r['peak_mb']:,.1f} MB, loss {r['loss']:.6f}",
              flush=True)
    plain, lean = res["plain"], res["lean"]

    def rel(key: str, other: dict) -> float:
        return abs(other[key] - plain[key]) / max(abs(plain[key]), 1e-30)

    result = {"plain_peak_mb": round(plain["peak_mb"], 1),
              "lean_peak_mb": round(lean["peak_mb"], 1),
              "plain_s": round(plain["s"], 4), "lean_s": round(lean["s"], 4)}
    for extra in ("recompute", "fused"):
        if extra in res:
            result.update({f"{extra}_peak_mb": round(res[extra]["peak_mb"], 1),
                           f"{extra}_s": round(res[extra]["s"], 4),
                           f"{extra}_loss_rel_diff": rel("loss", res[extra]),
                           f"{extra}_w_grad_norm_rel_diff": rel("w_grad_norm", res[extra])})
    result.update({f"{k}_rel_diff": rel(k, lean) for k in ("loss", "h_grad_norm", "w_grad_norm")})
    result.update(memory_ratio=round(plain["peak_mb"] / max(lean["peak_mb"], 1e-9), 2),
                  time_ratio=round(lean["s"] / plain["s"], 3), tokens=args.tokens,
                  vocab=args.vocab, dim=args.dim, chunk=args.chunk, dtype=args.dtype,
                  device=args.device, memory=CUDA_METHOD if args.device.startswith("cuda")
                  else CPU_METHOD)
    print(f"lean/plain: memory 1/{result['memory_ratio']}, time x{result['time_ratio']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
