"""`python -m leviathan.bench gpu`: tokens/s, MFU and peak memory of real training steps on a GPU.

For each shape (default v1/421M with the isoparametric grid's arms, v2/1.2B with the decoupled
grid's; every arm a grid file lists is run, so a control arm added there is measured too) it
builds the model, then takes --warmup + --steps optimizer steps with training's own step
(leviathan.training.step.TrainStep: the loss of trainer.loss_impl, AdamW fused on CUDA,
clipping, the non-finite guard) under bf16 autocast; attention is SDPA (flash on CUDA).
Micro-batch, loss, chunk, torch.compile, matmul precision and peak FLOP/s default to
conf/trainer/gpu.yaml (what `trainer=gpu` runs); the flags override them. Token ids come from
--data through the real data pipeline (shards or a prepared dir, or `minipile` for the demo
corpus written on the fly); without --data they are Zipf-distributed synthetic ids.

MFU = flops_per_token (the models' own accounting, as training logs it) x tokens/s / peak
FLOP/s (conf/trainer/gpu.yaml: H100 SXM bf16 dense, 989e12). For Leviathan arms it also times
LEV alone, forward + backward, evaluated once per distinct id of the batch (what training does)
and as the whole per-step table looked up by id, and names the faster.
Results go to --out (default $LEVIATHAN_ROOT/sweeps/bench_gpu.json, LEVIATHAN_ROOT defaulting
to the working directory: the sweeps_dir of conf/paths), which the sweep's dry run reads for its
GPU-hour estimate. Without CUDA it says so and exits 0. The shapes and trainer=gpu's settings
are composed with Hydra (leviathan/bench/shapes.py); on a bare GPU box give --shapes-file, a
file `python -m leviathan.bench shapes` wrote where Hydra is: then it imports torch and this
package only (no Hydra, OmegaConf, Lightning, MLflow or submitit).
The last line is one JSON object: <arm>_mfu, <arm>_tokens_per_s (each a mapping shape -> value)
and peak_mem_gb (the largest over all runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from leviathan.bench.shapes import arm_config, conf_node, grid_arms, split_shape, use_shapes_file
from leviathan.bench.throughput import token_batches
from leviathan.models.accounting import count_params, flops_per_token
from leviathan.training.config import LOSS_IMPLS, TrainerConfig

if TYPE_CHECKING:  # torch, the models and the step are imported where used: `--help` needs none
    import torch

DEFAULT_OUT = "sweeps/bench_gpu.json"  # under $LEVIATHAN_ROOT (default: the working directory)


def default_out() -> Path:
    return Path(os.environ.get("LEVIATHAN_ROOT", ".")) / DEFAULT_OUT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench gpu",
                                description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="v1/421M,v2/1.2B",
                   help="comma-separated conf/model sizes, each optionally @<grid> for its arms")
    p.add_argument("--arms", default=None, help="comma-separated arms (default: the grid's)")
    p.add_argument("--steps", type=int, default=30, help="measured optimizer steps per arm")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured steps first (compilation)")
    p.add_argument("--micro-batch", type=int, help="sequences per forward")
    p.add_argument("--accumulation", type=int, default=1, help="micro-batches per step")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per sequence")
    p.add_argument("--loss-impl", choices=LOSS_IMPLS, help="trainer.loss_impl")
    p.add_argument("--loss-chunk", type=int, help="trainer.loss_chunk")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile the network (trainer.compile)")
    p.add_argument("--peak-flops", type=float, help="per-device peak FLOP/s (trainer.peak_flops)")
    p.add_argument("--data", default=None,
                   help="Pile-format shards, a prepared dir, or `minipile` (default: synthetic)")
    p.add_argument("--lev-steps", type=int, default=5,
                   help="LEV-alone timings per path (0: skip them)")
    p.add_argument("--profile", type=int, default=0,
                   help="after the timed steps, profile this many more steps per arm and record "
                        "the top kernels by device time (0: none)")
    p.add_argument("--device", default="cuda", help="cuda (cpu: for tests of this code only)")
    p.add_argument("--out", type=Path, default=None, help=f"results JSON (default {DEFAULT_OUT})")
    p.add_argument("--shapes-file", type=Path, default=None,
                   help="read the shapes from this `bench shapes` file instead of composing "
                        "them with Hydra (a GPU box without Hydra)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    use_shapes_file(args.shapes_file)
    gpu = conf_node("trainer", "gpu")  # the defaults: what trainer=gpu runs
    for key in ("micro_batch", "loss_impl", "loss_chunk", "compile", "peak_flops"):
        if getattr(args, key) is None:
            setattr(args, key, gpu[key])
    args.peak_flops = float(args.peak_flops)
    args.matmul_precision = gpu["matmul_precision"]
    args.fused_adamw = bool(gpu.get("fused_adamw", False))
    for key in ("steps", "micro_batch", "accumulation", "seq_len", "loss_chunk"):
        if getattr(args, key) <= 0:
            p.error(f"--{key.replace('_', '-')} must be positive")
    if args.warmup < 0 or args.lev_steps < 0:
        p.error("--warmup and --lev-steps must be >= 0")
    return args


def batch_source(args, vocab_size: int, workdir: Path):
    """An endless iterator of (micro_batch, seq_len + 1) LongTensor batches."""
    if args.data is None:
        fixed = token_batches(vocab_size, (args.micro_batch, args.seq_len + 1), 8,
                              seed=args.seed)
        return (fixed[i % len(fixed)] for i in range(10**12))
    from leviathan.data.api import build_train_stream
    from leviathan.data.config import DataConfig
    from leviathan.data.prepare import INDEX

    common = dict(seq_len=args.seq_len, seed=args.seed, val_fraction=0.0)
    if args.data == "minipile":
        corpus = workdir / "minipile"
        cfg = DataConfig(path=str(corpus), build_corpus="minipile", mode="prepared",
                         prepared_dir=str(workdir / "prepared"), auto_prepare=True, **common)
    elif (Path(args.data) / INDEX).is_file():
        cfg = DataConfig(mode="prepared", prepared_dir=args.data, **common)
    else:
        cfg = DataConfig(path=args.data, mode="stream", **common)
    return iter(build_train_stream(cfg, batch_size=args.micro_batch))


def peak_memory_gb(device: torch.device, reset: bool = False) -> float:
    import torch

    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device) / 2**30
    status = Path("/proc/self/status")
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 2**20


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_lev(lev, batches, device: torch.device, steps: int) -> dict[str, float]:
    """Median seconds of LEV forward + backward: once per distinct id vs the whole table."""
    import torch
    import torch.nn.functional as F

    paths = {"unique": lambda x: lev.embed_unique(x),
             "table": lambda x: F.embedding(x, lev.full_table())}
    out = {}
    for name, fn in paths.items():
        times = []
        for i in range(steps + 1):
            x = batches[i % len(batches)][:, :-1].to(device)
            _sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                fn(x).float().square().mean().backward()
            lev.zero_grad(set_to_none=True)
            _sync(device)
            times.append(time.perf_counter() - t0)
        out[f"lev_{name}_s"] = statistics.median(times[1:])
    return out


def top_kernels(step, source, args, device: torch.device, top: int = 12) -> list[dict]:
    """Profile args.profile more steps; the `top` kernels (or CPU ops, without CUDA) by their
    device time: name, total ms, calls, share of all device time. Where MFU falls short of its
    goal, this says what the time went into."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(args.profile):
            step([next(source).to(device, non_blocking=True) for _ in range(args.accumulation)])
        _sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [{"name": e.key[:160], "ms": round(getattr(e, attr) / 1e3 / args.profile, 3),
             "calls_per_step": e.count / args.profile,
             "share": round(getattr(e, attr) / total, 4)} for e in events[:top]]


def run_arm(args, spec: str, arm: str, device: torch.device, workdir: Path,
            allowance_s: float | None = None, min_steps: int = 2) -> dict:
    """One arm: --warmup unmeasured steps (compilation), then --steps measured ones, or fewer
    once `allowance_s` seconds of measured steps (and at least `min_steps`) are in."""
    import torch

    from leviathan.models.build import build_model
    from leviathan.training.step import TrainStep

    cfg = arm_config(spec, arm)
    if cfg.max_seq_len < args.seq_len:
        raise SystemExit(f"--seq-len {args.seq_len} exceeds model.max_seq_len="
                         f"{cfg.max_seq_len} of {spec}")
    counts = count_params(cfg)
    fpt = flops_per_token(cfg, args.seq_len)
    torch.manual_seed(args.seed)
    peak_memory_gb(device, reset=True)
    model = build_model(cfg, device=device).train()
    tc = TrainerConfig(accelerator="gpu" if device.type == "cuda" else "cpu",
                       micro_batch=args.micro_batch,
                       global_batch=args.micro_batch * args.accumulation, compile=args.compile,
                       loss_impl=args.loss_impl, loss_chunk=args.loss_chunk,
                       fused_adamw=args.fused_adamw)
    step = TrainStep(model, tc, autocast=torch.bfloat16 if device.type == "cuda" else None)
    source = batch_source(args, cfg.vocab_size, workdir)
    times, losses, warm = [], [], 0.0
    t_build = time.perf_counter()
    for i in range(args.warmup + args.steps):
        micro = [next(source).to(device, non_blocking=True) for _ in range(args.accumulation)]
        _sync(device)
        t0 = time.perf_counter()
        losses.append(step(micro)["loss"])  # .item() synchronises
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            if allowance_s is not None and len(times) >= min_steps and sum(times) >= allowance_s:
                break
        else:
            warm = time.perf_counter() - t_build
    tokens = args.micro_batch * args.accumulation * args.seq_len
    med = statistics.median(times)
    out = {"shape": f"{cfg.ladder}/{cfg.size}", "spec": spec, "arm": arm,
           "n_layers": cfg.n_layers,
           "d_model": cfg.d_model, "head": cfg.head,
           "params_total": counts.total, "params_body": counts.body, "flops_per_token": fpt,
           "step_s_median": med, "steps_measured": len(times), "warmup_s": round(warm, 3),
           "tokens_per_s": tokens / med,
           "flops_per_s": fpt * tokens / med, "mfu": fpt * tokens / med / args.peak_flops,
           "peak_mem_gb": peak_memory_gb(device), "loss_first": losses[0],
           "loss_last": losses[-1]}
    if args.profile:
        out["top_kernels"] = top_kernels(step, source, args, device)
    if cfg.arm == "leviathan" and args.lev_steps:
        batches = token_batches(cfg.vocab_size, (args.micro_batch, args.seq_len + 1), 4,
                                seed=args.seed)
        out.update(time_lev(model.embed, batches, device, args.lev_steps))
        out["lev_faster"] = min(("unique", "table"), key=lambda k: out[f"lev_{k}_s"])
    del step, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench gpu needs CUDA: torch {torch.__version__} sees no CUDA device on this "
              "machine; nothing measured, nothing written")
        return 0
    torch.set_float32_matmul_precision(args.matmul_precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    specs = [s.strip() for s in args.shapes.split(",") if s.strip()]
    print(f"device {name}, torch {torch.__version__}; micro-batch {args.micro_batch} x "
          f"{args.seq_len} tokens x {args.accumulation} per step, {args.warmup} warm-up + "
          f"{args.steps} measured steps; loss {args.loss_impl}, compile {args.compile}, data "
          f"{args.data or 'synthetic Zipf ids'}; MFU against {args.peak_flops:.4g} FLOP/s")
    shapes: dict[str, dict[str, dict]] = {}
    failed: list[dict] = []
    out = args.out or default_out()
    with tempfile.TemporaryDirectory(prefix="leviathan-bench-gpu-") as tmp:
        for spec in specs:
            arms = args.arms.split(",") if args.arms else list(grid_arms(split_shape(spec)[1]))
            for arm in arms:
                try:
                    r = run_arm(args, spec, arm, device, Path(tmp))
                except torch.cuda.OutOfMemoryError as e:  # the other arms still get measured
                    print(f"{spec:9s} {arm:10s} out of memory: {str(e).splitlines()[0]}")
                    failed.append({"shape": spec, "arm": arm, "error": "out of memory"})
                    gc.collect()
                    torch.cuda.empty_cache()
                    continue
                shape = r["shape"]  # ladder/size: the key the sweep plan looks up
                shapes.setdefault(shape, {})[arm] = r
                lev = (f", LEV unique {r['lev_unique_s'] * 1e3:.1f} ms vs table "
                       f"{r['lev_table_s'] * 1e3:.1f} ms" if "lev_unique_s" in r else "")
                print(f"{spec:9s} {arm:10s} L={r['n_layers']:2d}: {r['tokens_per_s']:,.0f} "
                      f"tokens/s, MFU {r['mfu']:.1%}, peak {r['peak_mem_gb']:.1f} GB, loss "
                      f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}{lev}", flush=True)
                write_record(out, args, name, torch.__version__, shapes, failed)  # kept if killed
    if not shapes:
        print(f"nothing measured: {failed}")
        return 1
    summary = write_record(out, args, name, torch.__version__, shapes, failed)
    print(f"results: {out} (the sweep's dry run reads the MFU per shape and arm from here)")
    print(json.dumps({**summary, "device": name, "out": str(out)}))
    return 0


def summarize(shapes: dict[str, dict[str, dict]]) -> dict:
    summary: dict = {}
    for shape, arms in shapes.items():
        for arm, r in arms.items():
            summary.setdefault(f"{arm}_mfu", {})[shape] = round(r["mfu"], 4)
            summary.setdefault(f"{arm}_tokens_per_s", {})[shape] = round(r["tokens_per_s"], 1)
        if {"dense", "leviathan"} <= arms.keys():
            ratio = arms["leviathan"]["tokens_per_s"] / arms["dense"]["tokens_per_s"]
            summary.setdefault("leviathan_dense_ratio", {})[shape] = round(ratio, 4)
    summary["peak_mem_gb"] = round(max(r["peak_mem_gb"] for a in shapes.values()
                                       for r in a.values()), 2)
    return summary


def write_record(out: Path, args, device: str, torch_version: str,
                 shapes: dict[str, dict[str, dict]], failed: list[dict] | None = None,
                 extra: dict | None = None) -> dict:
    """Write the results so far to `out` (atomically: a reader never sees half a file)."""
    summary = summarize(shapes) if shapes else {}
    record = {"device": device, "torch": torch_version, "peak_flops": args.peak_flops,
              "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "shapes": shapes, "failed": failed or [], "summary": summary, **(extra or {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, out)
    return summary


if __name__ == "__main__":
    sys.exit(main())
