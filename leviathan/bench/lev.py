"""`python -m leviathan.bench lev`: the two LEV forms side by side (issue 17, docs/LEV_FORMS.md).

For `blocks` (LEV.md) and `khronos` (the public reimplementation's form), at the paper's settings
(o200k_base padded to 200,376, k 3, d_seed 128; blocks M 8, Q 4, cubic G 8, h 128, W_r;
khronos 8 heads, 16 quadratic knots, rank 64) and each D of --dims (512 and 768), it prints:
  params       the generator's parameters (count_params, equal to the built module)
  ids          forward + backward of --ids distinct ids (median of --repeats), autograd on
  table        forward + backward over the whole V_pad table, in chunks of --chunk ids (each
               chunk's backward before the next: the memory of one chunk, the work of all)
  init scale   of e at init over --ids ids: element std, mean row RMS, and `shared` =
               |mean row| / mean |row| (1: every token gets the same vector; 0: no common part)
Then, unless --train-steps 0, the short CPU training comparison (bench/lev_train.py): both forms
on the same backbone and data, logged to MLflow as two runs of one sweep. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used: `--help` needs none
    import torch

FORMS = ("blocks", "khronos")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench lev", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[512, 768], help="model widths D")
    p.add_argument("--ids", type=int, default=4096, help="distinct ids per timed batch")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    p.add_argument("--no-table", action="store_true", help="skip the whole-table timing")
    p.add_argument("--chunk", type=int, default=4096, help="ids per chunk of the whole table")
    p.add_argument("--impl", default="matmul", choices=("matmul", "bag"))
    p.add_argument("--vocab", type=int, default=None,
                   help="padded vocabulary (default: the paper's 200,376; smaller for a smoke)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=300,
                   help="steps of each training run of the comparison (0: skip it)")
    p.add_argument("--train-seq-len", type=int, default=64)
    p.add_argument("--sweep", default="lev_forms", help="sweep name of the training comparison")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow server (default: tracking.uri; a local one is started if silent)")
    p.add_argument("overrides", nargs="*",
                   help="Hydra overrides for both training runs (e.g. model.d_model=128)")
    a = p.parse_args(argv)
    for key in ("ids", "repeats", "chunk"):
        if getattr(a, key) <= 0:
            p.error(f"--{key} must be positive")
    if a.train_steps < 0:
        p.error("--train-steps must be >= 0")
    return a


def lev_config(form: str, d_model: int, impl: str, vocab: int | None):
    from leviathan.models import ModelConfig

    kw = dict(vocab_size=vocab, vocab_pad_to=None) if vocab else {}
    return ModelConfig(arm="leviathan", ladder="bench", size="bench", d_model=d_model,
                       n_heads=max(1, d_model // 64), n_layers=1,
                       lev=dict(form=form, impl=impl), **kw)


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ids(gen, ids: torch.Tensor, repeats: int) -> float:
    """Median seconds of forward + backward of generate(ids) (one untimed warm-up first)."""
    import torch

    w = torch.randn(ids.numel(), gen.d_model, device=ids.device)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        (gen.generate(ids) * w).sum().backward()
        gen.zero_grad(set_to_none=True)
        _sync(ids.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def time_table(gen, chunk: int, device: torch.device) -> float:
    """Seconds of forward + backward over all V_pad ids, chunk by chunk (gradients accumulate)."""
    import torch

    t0 = time.perf_counter()
    for ids in torch.arange(gen.vocab, device=device).split(chunk):
        e = gen.generate(ids)
        e.square().mean().backward()
    gen.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - t0


def init_scale(gen, ids: torch.Tensor) -> dict[str, float]:
    import torch

    with torch.no_grad():
        e = gen.generate(ids).double()  # (N, D)
        rows = e.norm(dim=1)
        return {"std": e.std().item(), "row_rms": (rows / e.shape[1] ** 0.5).mean().item(),
                "shared": (e.mean(0).norm() / rows.mean()).item()}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    from leviathan.models import LevGenerator, count_params

    result: dict = {"forms": {}}
    print(f"LEV forms at the paper's settings; {a.ids} distinct ids per batch, "
          f"{torch.get_num_threads()} threads, {device}, impl {a.impl}")
    print(f"{'form':8s} {'D':>5s} {'params':>11s} {'ids fwd+bwd':>12s} {'table fwd+bwd':>14s} "
          f"{'init std':>9s} {'row rms':>8s} {'shared':>7s}")
    for d_model in a.dims:
        for form in FORMS:
            cfg = lev_config(form, d_model, a.impl, a.vocab)
            torch.manual_seed(a.seed)
            gen = LevGenerator(cfg).to(device).train()
            n = count_params(cfg).input
            assert n == sum(p.numel() for p in gen.parameters())
            g = torch.Generator().manual_seed(a.seed)
            ids = torch.randperm(cfg.padded_vocab, generator=g)[: a.ids].to(device)
            scale = init_scale(gen, ids)
            t_ids = time_ids(gen, ids, a.repeats)
            t_table = None if a.no_table else time_table(gen, a.chunk, device)
            table_txt = "-" if t_table is None else f"{t_table:.2f} s"
            print(f"{form:8s} {d_model:5d} {n:11,d} {t_ids * 1e3:9.1f} ms {table_txt:>14s} "
                  f"{scale['std']:9.4f} {scale['row_rms']:8.4f} {scale['shared']:7.3f}",
                  flush=True)
            result["forms"][f"{form}_D{d_model}"] = {
                "params": n, "ids_fwd_bwd_s": round(t_ids, 5),
                "table_fwd_bwd_s": None if t_table is None else round(t_table, 3),
                **{f"init_{k}": round(v, 5) for k, v in scale.items()}}
            del gen
    print("Dense input table at init: std = model.init_std (0.02), shared ~ 0.")
    result.update(ids=a.ids, chunk=a.chunk, impl=a.impl, threads=torch.get_num_threads(),
                  device=str(device), vocab=a.vocab or 200376)
    if a.train_steps:
        from leviathan.bench.lev_train import compare_forms

        result["training"] = compare_forms(steps=a.train_steps, seq_len=a.train_seq_len,
                                           sweep=a.sweep, tracking_uri=a.tracking_uri,
                                           overrides=a.overrides, seed=a.seed)
    print(json.dumps(result))
    return 0
