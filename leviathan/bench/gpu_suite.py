"""`python -m leviathan.bench gpu-suite`: every GPU measurement the defaults rest on, in one call.

Made for a GPU machine lent for a few minutes, where only torch, lightning, tiktoken, numpy,
scipy and pandas are installed (plus Hydra's wheels if the training job is to run: see README
"GPU efficiency"). One call, one JSON (--out), parts in order of importance, each in its own
process under its own time limit so that a hang or an out-of-memory in one keeps the others:

  probe         device, torch, CUDA; an 8192^3 bf16 matmul's FLOP/s (the reachable peak)
  grid          bench gpu-grid: every shape of the shipped grids (isoparametric, isobody,
                decoupled, data_scaling) at trainer=gpu's settings, most needed first, each
                within an allowance; the shapes that did not fit are listed (`skipped`)
  train         the real job: `python -m leviathan.train trainer=gpu` of the smallest
                isoparametric pair (Dense, Leviathan) for --train-steps steps on the demo
                corpus, tracking.enabled=false (no MLflow on the box): tokens/s (the job's
                steady state), MFU, losses, and the settings it ran at
  loss          bench loss --device cuda: plain vs chunked (lean) head + loss, time and memory
  gpu_eager     bench gpu --shapes <shapes> --no-compile   (Dense/Leviathan/control MFU)
  gpu_compiled  bench gpu --shapes <shapes> --compile --profile 3   (the top kernels)

The default budget (570 s) fits probe, grid, train and loss on one H100/H200, under 10 minutes
in all; gpu_eager and gpu_compiled run when time is left (or when named in --parts). The record
is what the plan and the cost model read (leviathan.sweep.cost_records.read: the grid part, the
bench parts and the train part); the measured shapes of trainer=gpu's compile setting are also
written to $LEVIATHAN_ROOT/sweeps/bench_gpu.json, which the sweep's dry run reads (the grid
part's, else gpu_compiled's). Without CUDA (or with --device cpu, for tests of this code) it
runs the same parts on tiny shapes (the grid part: grid smoke_tiny, eager).
The last line is one JSON object: the suite's summary (goals met or missed, the parts' exit
codes, the grid's shapes skipped for time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from leviathan.bench.gpu import default_out
from leviathan.bench.shapes import conf_node, use_shapes_file

GRID_MARGIN_S = 30  # the grid part's process start and its last shape's overrun
GOALS = {  # issue 26: the figures that decide the GPU defaults
    "dense_mfu v2/1.2B": 0.45, "dense_mfu v1/421M": 0.35, "leviathan_dense_ratio iso-body": 0.9}
TRAIN_PAIR = {"dense": ["model.arm=dense", "model.head=untied"],
              "leviathan": ["model.arm=leviathan", "model.head=untied",
                            "model.depth_rule=isoparametric"]}  # conf/grid/isoparametric.yaml


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench gpu-suite",
                                description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="v1/421M,v2/1.2B", help="bench gpu --shapes")
    p.add_argument("--steps", type=int, default=15, help="bench gpu: measured steps per arm")
    p.add_argument("--train-model", default="v1/60M", help="the trained pair's size")
    p.add_argument("--train-steps", type=int, default=30, help="the training job's steps")
    p.add_argument("--budget-s", type=float, default=570.0,
                   help="the whole suite's wall-clock limit; parts are cut to fit")
    p.add_argument("--parts", default="probe,grid,train,loss,gpu_eager,gpu_compiled",
                   help="comma-separated parts to run, in this order")
    p.add_argument("--grids", default="isoparametric,isobody,decoupled,data_scaling",
                   help="the grid part's grids (bench gpu-grid --grids)")
    p.add_argument("--grid-s", type=float, default=None,
                   help="the grid part's budget for its shapes (bench gpu-grid --budget-s; "
                        f"default: its share of --budget-s less {GRID_MARGIN_S} s)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="scratch for the corpus and the runs (default: a temporary folder)")
    p.add_argument("--shapes-file", type=Path, default=None,
                   help="bench gpu --shapes-file (a box without Hydra; the train part then "
                        "needs Hydra's wheels all the same)")
    p.add_argument("--device", default="cuda", help="cuda (cpu: tiny shapes, for tests)")
    p.add_argument("--out", type=Path, default=Path("gpu_suite.json"), help="the suite's JSON")
    return p.parse_args(argv)


# part name -> (share of the budget it may use at most, minimum seconds worth starting it)
LIMITS = {"probe": (0.08, 10), "grid": (0.7, 60), "gpu_eager": (0.25, 40), "train": (0.3, 60),
          "gpu_compiled": (0.45, 60), "loss": (0.12, 20)}


def run_part(name: str, cmd: list[str], limit_s: float, log_dir: Path,
             env: dict | None = None) -> dict:
    """Run one part as a process, at most limit_s; its output goes to <log_dir>/<name>.log and
    its last JSON line (if any) into the result."""
    log_path = log_dir / f"{name}.log"
    t0 = time.time()
    shown = "python -c <probe>" if cmd[1] == "-c" else " ".join(cmd[2:])
    print(f"[{name}] {shown} (at most {limit_s:.0f} s)", flush=True)
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=limit_s,
                                  env=env)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    text = log_path.read_text(errors="replace")
    last = None
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                last = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    out = {"rc": rc, "wall_s": round(time.time() - t0, 1), "log": str(log_path)}
    if last is not None:
        out["result"] = last
    if rc != 0:
        out["tail"] = text[-3000:]
    print(f"[{name}] rc={rc} in {out['wall_s']} s", flush=True)
    return out


PROBE = r"""
import json, time, torch
dev = torch.device(DEVICE)
out = {"torch": torch.__version__, "cuda": torch.version.cuda,
       "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
n = 8192 if dev.type == "cuda" else 512
a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
for _ in range(3):
    a @ b
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
sync(); t0 = time.perf_counter()
for _ in range(10):
    a @ b
sync()
out["matmul_bf16_flops_per_s"] = 10 * 2 * n**3 / (time.perf_counter() - t0)
out["matmul_n"] = n
if dev.type == "cuda":
    out["memory_gb"] = torch.cuda.get_device_properties(dev).total_memory / 2**30
print(json.dumps(out))
"""


def train_part(args, work: Path, limit_s: float, log_dir: Path) -> dict:
    """The real training job, Dense then Leviathan, with trainer=gpu's settings (on the CPU:
    trainer=gpu_on_cpu, eager, for tests of this code); `settings` records what it ran at."""
    tiny = args.device != "cuda"
    trainer = conf_node("trainer", "gpu_on_cpu" if tiny else "gpu")
    out: dict = {"model": "debug_small@isoparametric" if tiny else args.train_model,  # its arms
                 "settings": {"compile": False if tiny else bool(trainer["compile"]),
                              "precision": str(trainer["precision"]),
                              "loss_impl": str(trainer.get("loss_impl", "chunked"))}}
    deadline = time.time() + limit_s
    for arm, overrides in TRAIN_PAIR.items():
        left = deadline - time.time()
        if left < 20:
            out[arm] = {"rc": "skipped: out of time"}
            continue
        model = ["model=debug_small", "data.tokenizer=debug_2k", "data=debug",
                 "trainer=gpu_on_cpu", "trainer.micro_batch=2", "trainer.global_batch=4",
                 "trainer.compile=false"] if tiny \
            else [f"model={args.train_model}", "data=minipile", "trainer=gpu",
                  "trainer.global_batch=64"]  # 2 micro-batches of 32: accumulation too
        cmd = [sys.executable, "-m", "leviathan.train", *model, *overrides,
               f"trainer.max_steps={args.train_steps}", "trainer.warmup_steps=3",
               f"trainer.val_every={args.train_steps}", "trainer.val_batches=4",
               f"trainer.log_every={max(1, args.train_steps // 6)}",
               f"trainer.ckpt_every={args.train_steps}", "tracking.enabled=false",
               f"paths.data_dir={work / 'data'}", f"paths.scratch_dir={work / 'scratch'}",
               f"run_name=suite-{arm}", "resume=never"]
        r = run_part(f"train_{arm}", cmd, left, log_dir)
        summary = work / "scratch" / "runs" / f"suite-{arm}" / "summary.json"
        if summary.exists():
            s = json.loads(summary.read_text())
            r["result"] = {k: s.get(k) for k in ("n_params", "steps", "tokens_seen",
                                                 "final_val_loss", "final_train_loss",
                                                 "throughput", "wall_s", "plan", "cost")}
            from leviathan.tracking.folder import read_metrics

            r["train_loss"] = [[m["step"], m["train/loss"]] for m in read_metrics(summary.parent)
                               if "train/loss" in m]
        out[arm] = r
    d, lev = (out.get(a, {}).get("result", {}).get("throughput", {}) for a in TRAIN_PAIR)
    if d.get("tokens_per_s") and lev.get("tokens_per_s"):
        out["leviathan_dense_tokens_ratio"] = lev["tokens_per_s"] / d["tokens_per_s"]
    return out


def verdicts(parts: dict) -> dict:
    """Each goal: the measured value (compiled if measured: gpu_compiled, else the grid part,
    else eager) and met / missed."""
    res = {}
    for variant in ("gpu_compiled", "grid", "gpu_eager"):
        summary = parts.get(variant, {}).get("result") or {}
        if not summary:
            continue
        # the grid part's keys are <size>@<grid>: v1/421M@isoparametric, v2/1.2B@decoupled
        mfu = {k.split("@")[0]: v for k, v in summary.get("dense_mfu", {}).items()}
        ratio = {k.split("@")[0]: v for k, v in summary.get("leviathan_dense_ratio", {}).items()
                 if k.split("@")[-1] in ("decoupled", k)}
        for shape in ("v2/1.2B", "v1/421M"):
            key = f"dense_mfu {shape}"
            if shape in mfu and key not in res:
                res[key] = {"value": mfu[shape], "goal": GOALS[key], "from": variant,
                            "met": mfu[shape] >= GOALS[key]}
        if "v2/1.2B" in ratio and "leviathan_dense_ratio iso-body" not in res:
            key = "leviathan_dense_ratio iso-body"  # the decoupled grid: depth_rule=fixed
            res[key] = {"value": ratio["v2/1.2B"], "goal": GOALS[key], "from": variant,
                        "met": ratio["v2/1.2B"] >= GOALS[key]}
    return res


class Suite:
    """The parts' shared settings: where they write, what they run on."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.cuda = args.device == "cuda"
        self.shapes = args.shapes if self.cuda else "debug_small@smoke_tiny"
        self.log_dir = args.out.parent / "gpu_suite_logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.bench = [sys.executable, "-m", "leviathan.bench"]
        self.gpu_args = [] if self.cuda else ["--micro-batch", "2", "--seq-len", "32", "--device",
                                           "cpu", "--lev-steps", "1"]
        use_shapes_file(args.shapes_file)
        self.gpu = conf_node("trainer", "gpu")  # what trainer=gpu runs
        self.grid_written = False  # the grid part wrote sweeps/bench_gpu.json
        if args.shapes_file is not None:
            self.gpu_args += ["--shapes-file", str(args.shapes_file)]

    def run(self, name: str, limit: float) -> dict:
        args = self.args
        if name == "probe":
            code = PROBE.replace("DEVICE", repr(args.device))
            return run_part(name, [sys.executable, "-c", code], limit, self.log_dir)
        if name == "train":
            return train_part(args, self.work, limit, self.log_dir)
        if name == "grid":
            return self.grid(limit)
        if name == "loss":
            cmd = [*self.bench, "loss", "--device", args.device, "--variants", "plain,lean"]
            cmd += (["--tokens", "16384", "--dim", "2048", "--chunk", str(self.gpu["loss_chunk"])]
                    if self.cuda else
                    ["--tokens", "256", "--vocab", "4096", "--dim", "64", "--chunk", "64"])
            return run_part(name, cmd, limit, self.log_dir)
        compiled = name == "gpu_compiled"  # gpu_eager | gpu_compiled
        partial = self.log_dir / f"bench_{name}.json"
        cmd = [*self.bench, "gpu", "--shapes", self.shapes, "--steps", str(args.steps),
               "--warmup", "3", "--compile" if compiled else "--no-compile", "--out",
               str(partial), *self.gpu_args, *(["--profile", "3"] if compiled else [])]
        out = run_part(name, cmd, limit, self.log_dir)
        if partial.exists():  # what finished before a timeout is kept
            rec = json.loads(partial.read_text())
            out["result"], out["shapes"] = rec.get("summary"), rec.get("shapes")
            out["settings"] = rec.get("settings")  # what the cost model reads with the shapes
            if compiled == bool(self.gpu.get("compile")) and not self.grid_written:
                self.publish(partial)  # trainer=gpu's: the plan reads it
        return out

    def grid(self, limit: float) -> dict:
        """bench gpu-grid within the part's limit; the record's shapes, settings, skipped."""
        partial = self.log_dir / "bench_grid.json"
        tiny = [] if self.cuda else ["--no-compile", "--shape-s", "0.2", "--steps", "3",
                                     "--micro-batch", "2", "--seq-len", "16", "--device", "cpu"]
        grids = self.args.grids if self.cuda else "smoke_tiny"
        budget = self.args.grid_s if self.args.grid_s is not None else max(
            1.0, limit - GRID_MARGIN_S)
        cmd = [*self.bench, "gpu-grid", "--grids", grids, "--budget-s", f"{budget:g}",
               "--out", str(partial), *tiny,
               *(["--shapes-file", str(self.args.shapes_file)] if self.args.shapes_file else [])]
        out = run_part("grid", cmd, limit, self.log_dir)
        if partial.exists():  # what finished before a timeout is kept, and what was not reached
            rec = json.loads(partial.read_text())
            out.update({k: rec.get(k) for k in ("shapes", "settings", "skipped", "pending",
                                                "failed", "order")})
            out["result"] = rec.get("summary")
            out["skipped"] = [*(rec.get("skipped") or []),
                              *({**p, "reason": "not reached: the part ran out of time"}
                                for p in rec.get("pending") or [])]
            if rec.get("shapes") and bool(rec["settings"].get("compile")) == \
                    bool(self.gpu.get("compile")):
                self.publish(partial)
                self.grid_written = True
        return out

    def publish(self, record: Path) -> None:
        """The record the sweep's dry run reads by default (sweep.measured_mfu)."""
        target = default_out()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record, target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    deadline = t_start + args.budget_s
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(f"gpu-suite needs CUDA: torch {torch.__version__} sees no CUDA device; "
                  "nothing measured (--device cpu runs the parts on tiny shapes)")
            return 0
    names = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [n for n in names if n not in LIMITS]
    if unknown:
        raise SystemExit(f"--parts: unknown part {unknown[0]!r} (parts: {', '.join(LIMITS)})")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="leviathan-gpu-suite-") as tmp:
        suite = Suite(args, args.workdir or Path(tmp))
        record: dict = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "budget_s": args.budget_s,
                        "settings": {k: str(v) for k, v in vars(args).items()}, "parts": {}}
        parts = record["parts"]

        def save() -> None:
            record["goals"] = verdicts(parts)
            record["wall_s"] = round(time.time() - t_start, 1)
            tmp_out = args.out.with_name(f".{args.out.name}.tmp")
            tmp_out.write_text(json.dumps(record, indent=2, default=str) + "\n")
            os.replace(tmp_out, args.out)

        for name in names:
            share, least = LIMITS[name]
            left = deadline - time.time()
            limit = min(share * args.budget_s, left)
            parts[name] = (suite.run(name, limit) if limit >= least
                           else {"rc": f"skipped: {left:.0f} s left of the budget"})
            save()
    print(f"gpu-suite: {args.out} in {record['wall_s']} s")
    skipped = [f"{x['spec']} {x['arm']}" for x in (parts.get("grid") or {}).get("skipped") or []]
    if skipped:
        print(f"grid: {len(skipped)} shape(s) skipped for time (the plan keeps them modelled): "
              + ", ".join(skipped))
    print(json.dumps({"goals": record["goals"], "out": str(args.out),
                      "parts": {k: v.get("rc") for k, v in parts.items() if "rc" in v},
                      "grid_skipped": skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
