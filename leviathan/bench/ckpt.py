"""`python -m leviathan.bench ckpt`: how long one checkpoint takes to write, the old way and now.

Two states: the debug model (conf/model/debug.yaml, o200k_base vocabulary) with its AdamW state
after one step, and a synthetic state of `--gb` GB (weights + two AdamW moments, fp32). Each is
written, `--repeats` times, alternating the order, to a run folder under `--dir`:
- `lightning`: what StepCallback.save did before issue 29: Lightning's TorchCheckpointIO (the
  whole checkpoint serialized into memory, then an fsspec transaction: a temporary file in the
  system temp folder moved to .last.ckpt.tmp) + fsync + rename; measured twice, with the system
  temp folder on the run folder's filesystem (`lightning_same_fs`: the move is a rename) and on
  another one (`lightning_other_fs`, `--other-tmp`, default /dev/shm: the move is a copy);
- `in_place`: CheckpointStore.save (training/checkpoints.py): torch.save straight into a
  temporary name beside last.ckpt with sha256 as it writes, fsync, the previous one kept as a
  hard link, rename.
Every write ends with fsync, so the figures include the disk. The last line is one JSON object:
seconds (median, and min) per state and way, and the ratios lightning / in_place of the medians.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench ckpt",
                                description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=1.0, help="size of the synthetic state (GB)")
    p.add_argument("--repeats", type=int, default=3, help="writes per state and way")
    p.add_argument("--dir", default=".bench-ckpt", help="where the run folder goes (removed "
                   "after); put it on the filesystem to measure")
    p.add_argument("--other-tmp", default="/dev/shm", help="a system temp folder on another "
                   "filesystem than --dir (empty: skip lightning_other_fs)")
    args = p.parse_args(argv)
    if args.gb <= 0 or args.repeats <= 0:
        p.error("--gb and --repeats must be positive")
    return args


def debug_state() -> dict:
    """The debug model's checkpoint content: weights and AdamW state after one step."""
    import torch

    from leviathan.config import compose
    from leviathan.models import build_model, resolve_model_config

    torch.manual_seed(0)
    model = build_model(resolve_model_config(compose("train", ["model=debug"]).model))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    return {"global_step": 1, "state_dict": model.state_dict(),
            "optimizer_states": [opt.state_dict()]}


def synthetic_state(gb: float) -> dict:
    """`gb` GB in 64 MB fp32 tensors: a third weights, two thirds AdamW moments."""
    import torch

    n = int(gb * 1e9 / 4 / 3)
    chunk = 16 << 20
    sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    g = torch.Generator().manual_seed(0)
    w = {f"w{i}": torch.randn(s, generator=g) for i, s in enumerate(sizes)}
    moments = {i: {"exp_avg": torch.randn(s, generator=g), "exp_avg_sq": torch.rand(s, generator=g)}
               for i, s in enumerate(sizes)}
    return {"global_step": 1, "state_dict": w, "optimizer_states": [{"state": moments}]}


def lightning_save(state: dict, run_dir: Path, temp_dir: str) -> None:
    """The old StepCallback.save on rank 0: Lightning's IO to .last.ckpt.tmp, fsync, rename."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    old = tempfile.tempdir
    tempfile.tempdir = temp_dir  # where fsspec's transaction stages the file (tempfile.mkstemp)
    try:
        tmp = run_dir / ".last.ckpt.tmp"
        TorchCheckpointIO().save_checkpoint(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, run_dir / "last.ckpt")
    finally:
        tempfile.tempdir = old


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(state: dict, root: Path, ways: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per way, `repeats` writes each, the order alternating every round. Each timed
    write replaces a previous checkpoint written (untimed) the same way, then os.sync() and a
    second's rest, so no way pays for another's writeback."""
    from leviathan.training.checkpoints import CheckpointStore

    times: dict[str, list[float]] = {w: [] for w in ways}
    for r in range(repeats):
        for way in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            run_dir = root / way
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            if ways[way] is None:
                store = CheckpointStore(run_dir, keep=2)
                store.save(state, 1)  # the previous checkpoint, kept as prev_1.ckpt
                fn = functools.partial(store.save, state, 2)
            else:
                lightning_save(state, run_dir, ways[way])  # the previous last.ckpt
                fn = functools.partial(lightning_save, state, run_dir, ways[way])
            os.sync()
            time.sleep(1.0)
            times[way].append(timed(fn))
            shutil.rmtree(run_dir)
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from leviathan.training.checkpoints import state_bytes

    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    same_tmp = root / "system-tmp"
    same_tmp.mkdir(exist_ok=True)
    ways: dict[str, str | None] = {"lightning_same_fs": str(same_tmp), "in_place": None}
    if args.other_tmp:
        if os.stat(args.other_tmp).st_dev == os.stat(root).st_dev:
            print(f"--other-tmp {args.other_tmp} is on the same filesystem as {root}: skipped")
        else:
            ways["lightning_other_fs"] = args.other_tmp
    out: dict = {"dir": str(root), "other_tmp": ways.get("lightning_other_fs"),
                 "repeats": args.repeats}
    try:
        for name, make in (("debug", debug_state), (f"synthetic_{args.gb:g}gb",
                                                    lambda: synthetic_state(args.gb))):
            state = make()
            runs = measure(state, root, ways, args.repeats)
            secs = {w: statistics.median(v) for w, v in runs.items()}
            row = {"state_bytes": state_bytes(state),
                   **{f"{w}_s": round(v, 4) for w, v in secs.items()},
                   **{f"{w}_min_s": round(min(v), 4) for w, v in runs.items()}}
            for w in ways:
                if w != "in_place":
                    row[f"{w}_over_in_place"] = round(secs[w] / secs["in_place"], 2)
            out[name] = row
            print(f"{name}: {row['state_bytes'] / 1e6:,.1f} MB of tensors; "
                  + ", ".join(f"{w} {secs[w]:.3f} s" for w in ways))
            del state
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out))
    return 0
