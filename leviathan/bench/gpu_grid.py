"""`python -m leviathan.bench gpu-grid`: every shape of the shipped grids, measured in one process
within a time budget, most needed first; the shapes left out for time are listed (the plan keeps
them modelled).

The shapes: every size of grid.sizes with each of the grid's arms and every Dense-only rung of
grid.dense_sizes, for isoparametric, isobody, decoupled and data_scaling (--grids): v1 60M-989M,
v2 200M-2.1B. A model two grids share (isobody's Dense is isoparametric's, data_scaling's 109M
arms are isoparametric's) is measured once: the plan matches a measurement by size, arm, depth
and parameters (leviathan.sweep.cost_model.StepShape.model_key). The order:

  1. the smallest rung of each ladder (v1/60M, v2/200M), every arm: overheads dominate there,
     the cost model is least sure of them, and they are quick;
  2. one of each arm per size, smaller sizes first (every arm name at every size);
  3. the repeats: another grid's arm of the same name at a size (isobody's Leviathan, which
     keeps the Dense depth where isoparametric's solves its own).

Each shape takes bench gpu's step (leviathan.bench.gpu.run_arm: trainer=gpu's micro-batch,
compile, chunked loss, fused AdamW, bf16) for --warmup steps, then measured steps until
--shape-s seconds of them (at least --min-steps, at most --steps). A shape is started only when
the budget still holds its allowance plus its warm-up, estimated from the shapes before it (a
shape whose blocks' widths were compiled already reuses the graphs: torch.compile keeps them,
with the recompile limit raised and static shapes, as each training job compiles them); the
first shape is always measured. The record (--out, default $LEVIATHAN_ROOT/sweeps/bench_gpu.json
as bench gpu's; written after every shape, `pending` what is left) has bench gpu's
format with shapes keyed by <size>@<grid>, so `leviathan.sweep.cost_records.read` and the plan
(sweep.measured_mfu) read it, and `skipped` lists what did not fit. Runs on a GPU box with torch
and this package only: give --shapes-file, written where Hydra is by

    python -m leviathan.bench shapes --grids isoparametric,isobody,decoupled,data_scaling --out F

Other flags are bench gpu's (--device, --micro-batch, --seq-len, --compile/--no-compile, ...).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from leviathan.bench import gpu
from leviathan.bench.shapes import arm_config, grid_specs

SHIPPED = ("isoparametric", "isobody", "decoupled", "data_scaling")


@dataclass
class Shape:
    spec: str  # <size>@<grid>
    arm: str
    shape: str  # ladder/size
    graph: tuple  # what its compiled block graph depends on: width, heads, FFN
    tier: int  # 0 smallest rungs, 1 one of each arm per size, 2 repeats
    size_n: float  # the size's nominal parameters (ordering)


def _nominal(size: str) -> float:
    """'v1/60M' -> 6e7, 'v2/1.2B' -> 1.2e9; anything else sorts last."""
    m = re.search(r"([\d.]+)([KMB])$", size)
    return float(m[1]) * {"K": 1e3, "M": 1e6, "B": 1e9}[m[2]] if m else float("inf")


def grid_shapes(grids: list[str]) -> list[Shape]:
    """Every distinct model of these grids, in the order they are measured."""
    from leviathan.models.accounting import count_params

    seen: dict[tuple, Shape] = {}
    named: set[tuple] = set()  # (ladder/size, arm name) measured once already
    smallest: dict[str, float] = {}
    found: list[tuple[str, str, object]] = []
    for grid in grids:
        for spec, arms in grid_specs(grid):
            for arm in arms:
                cfg = arm_config(spec, arm)
                found.append((spec, arm, cfg))
                size_n = _nominal(spec.split("@")[0])
                smallest[cfg.ladder] = min(smallest.get(cfg.ladder, size_n), size_n)
    for spec, arm, cfg in found:
        shape = f"{cfg.ladder}/{cfg.size}"
        key = (shape, arm, cfg.n_layers, count_params(cfg).total)
        if key in seen:
            continue
        size_n = _nominal(spec.split("@")[0])
        tier = 0 if size_n == smallest[cfg.ladder] else 2 if (shape, arm) in named else 1
        named.add((shape, arm))
        seen[key] = Shape(spec, arm, shape, (cfg.d_model, cfg.n_heads, cfg.ffn_dim), tier,
                          size_n)
    order = {id(s): i for i, s in enumerate(seen.values())}
    return sorted(seen.values(), key=lambda s: (s.tier, s.size_n, order[id(s)]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench gpu-grid",
                                description=__doc__.splitlines()[0],
                                epilog="Any other flag is bench gpu's (python -m leviathan.bench "
                                       "gpu --help): --device, --micro-batch, --seq-len, "
                                       "--compile/--no-compile, --shapes-file, --out, ...")
    p.add_argument("--grids", default=",".join(SHIPPED), help="comma-separated grids")
    p.add_argument("--budget-s", type=float, default=400.0,
                   help="seconds for all shapes (the first is always measured)")
    p.add_argument("--shape-s", type=float, default=3.0,
                   help="each shape's allowance of measured steps, in seconds")
    p.add_argument("--min-steps", type=int, default=3, help="measured steps per shape, at least")
    p.add_argument("--steps", type=int, default=20, help="measured steps per shape, at most")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (compilation)")
    p.add_argument("--compile-s", type=float, default=40.0,
                   help="a new graph's warm-up until one is measured (the first estimate)")
    own, rest = p.parse_known_args(argv)
    args = gpu.parse_args([*rest, "--steps", str(own.steps), "--warmup", str(own.warmup),
                           "--lev-steps", "0"])
    for key, value in vars(own).items():
        setattr(args, key, value)
    return args


def keep_graphs() -> None:
    """torch.compile for many models in one process: each width its own static graph (as the
    job compiles it once), every width kept (the default recompile limit is 8)."""
    import torch._dynamo as dynamo

    dynamo.config.automatic_dynamic_shapes = False
    for name in ("recompile_limit", "cache_size_limit"):  # torch >= 2.6 | older
        if hasattr(dynamo.config, name):
            setattr(dynamo.config, name, 256)


class Estimate:
    """Seconds a shape needs besides its allowance: build and warm-up, new graph or reused."""

    def __init__(self, compile_s: float) -> None:
        self.new, self.reused = compile_s, None
        self.graphs: set[tuple] = set()

    def __call__(self, s: Shape) -> float:
        if s.graph in self.graphs:
            return self.reused if self.reused is not None else self.new
        return self.new

    def saw(self, s: Shape, seconds: float) -> None:
        if s.graph in self.graphs:
            self.reused = max(self.reused or 0.0, seconds)
        else:
            self.new = seconds if not self.graphs else max(self.new, seconds)
            self.graphs.add(s.graph)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench gpu-grid needs CUDA: torch {torch.__version__} sees no CUDA device; "
              "nothing measured, nothing written")
        return 0
    torch.set_float32_matmul_precision(args.matmul_precision)
    if args.compile:
        keep_graphs()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    todo = grid_shapes([g.strip() for g in args.grids.split(",") if g.strip()])
    out = args.out or gpu.default_out()
    print(f"device {name}: {len(todo)} shapes of {args.grids} in {args.budget_s:.0f} s; "
          f"micro-batch {args.micro_batch} x {args.seq_len}, compile {args.compile}, "
          f"{args.warmup} warm-up steps, then {args.shape_s:g} s of steps per shape")
    shapes: dict[str, dict[str, dict]] = {}
    skipped: list[dict] = []
    failed: list[dict] = []
    estimate = Estimate(args.compile_s if args.compile else 0.0)
    deadline = time.time() + args.budget_s

    def save(pending: list[Shape]) -> None:
        gpu.write_record(out, args, name, torch.__version__, shapes, failed, extra={
            "order": [[s.spec, s.arm] for s in todo], "skipped": skipped,
            "pending": [{"spec": s.spec, "arm": s.arm, "shape": s.shape} for s in pending]})

    with tempfile.TemporaryDirectory(prefix="leviathan-bench-grid-") as tmp:
        for i, s in enumerate(todo):
            need, left = estimate(s) + args.shape_s, deadline - time.time()
            if i and left < need:
                skipped.append({"spec": s.spec, "arm": s.arm, "shape": s.shape, "reason":
                                f"time: {max(left, 0):.0f} s left, ~{need:.0f} s needed"})
                continue
            t0 = time.time()
            try:
                r = gpu.run_arm(args, s.spec, s.arm, device, Path(tmp),
                                allowance_s=args.shape_s, min_steps=args.min_steps)
            except torch.cuda.OutOfMemoryError as e:  # the other shapes still get measured
                failed.append({"spec": s.spec, "arm": s.arm, "shape": s.shape,
                               "error": f"out of memory: {str(e).splitlines()[0]}"})
                gc.collect()
                torch.cuda.empty_cache()
                save(todo[i + 1:])
                continue
            # what it took besides its measured steps: building, compiling, warming up
            estimate.saw(s, time.time() - t0 - r["step_s_median"] * r["steps_measured"])
            shapes.setdefault(s.spec, {})[s.arm] = r
            save(todo[i + 1:])
            print(f"{s.spec:22s} {s.arm:12s} L={r['n_layers']:2d}: {r['tokens_per_s']:,.0f} "
                  f"tokens/s, MFU {r['mfu']:.1%} ({r['steps_measured']} steps; warm-up "
                  f"{r['warmup_s']:.1f} s), peak {r['peak_mem_gb']:.1f} GB", flush=True)
    save([])
    measured = sum(len(a) for a in shapes.values())
    took = time.time() - deadline + args.budget_s
    print(f"measured {measured} of {len(todo)} shapes in {took:.0f} s; results: {out}")
    if skipped:
        print("skipped for time (the plan keeps them modelled): "
              + ", ".join(f"{x['spec']} {x['arm']}" for x in skipped))
    print(json.dumps({"measured": measured, "shapes": len(todo), "skipped": skipped,
                      "failed": failed, "device": name, "out": str(out)}))
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
