"""`python -m leviathan.bench data`: raw tiktoken vs the streaming pipeline vs the prepared reader.

All three see the same documents (a minipile corpus, or --path) and the same thread count:
  raw       tiktoken encode_ordinary_batch over the documents already in memory
  stream    build_train_stream(mode=stream): read + parse + encode + pack + shuffle + batch,
            timed from iter() (start-up included) over --epochs passes; counts every window
            that went through the pipeline (the batches and the filled shuffle buffer)
  prepared  build_train_stream(mode=prepared): gather windows from the uint32 memmap
Also: `raw_numpy`, tiktoken's buffer path (encode_to_numpy: no Python lists, what the stream's
encoder uses); the stream's stages timed one by one on one pass (read: decompress + parse +
validation split; tokenize; pack; shuffle + batch), so a regression shows where it came from;
and with --workers-table 1,2,4 the stream's rate with data.num_workers = k (one thread each)
and its scaling k_rate / (k x the one-worker rate).
Targets: stream / raw >= 0.9; prepared >= 50M tokens/s. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _best(fn, repeats: int) -> float:
    return max(fn() for _ in range(repeats))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", help="Pile-format shards to read (default: a fresh minipile)")
    p.add_argument("--mb", type=float, default=6.0, help="minipile size when --path is unset")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--workers", type=int, default=0,
                   help="stream: data.num_workers (processes sharing --threads; 0: threads only)")
    p.add_argument("--tokenizer", default="o200k_base")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shuffle-buffer", type=int, default=1000)
    p.add_argument("--epochs", type=float, default=3.0, help="stream: passes over the corpus")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs each")
    p.add_argument("--seconds", type=float, default=2.0, help="prepared: time per run")
    p.add_argument("--workers-table", default="",
                   help="comma-separated data.num_workers values to time the stream with "
                        "(one tokenizer thread each), e.g. 1,2,4")
    a = p.parse_args(argv)

    from leviathan.data import build_train_stream
    from leviathan.data.minipile import cached_minipile
    from leviathan.data.prepare import prepare
    from leviathan.data.reading import SkipStats, iter_docs, resolve_shards
    from leviathan.data.tokenizer import get_encoding

    tmp = Path(tempfile.mkdtemp(prefix="leviathan-bench-data-"))
    path = a.path or str(cached_minipile(tmp / "corpus", mb=a.mb))
    texts = [d.text for s in resolve_shards(path) for d in iter_docs(s, SkipStats())]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    enc = get_encoding(a.tokenizer)
    print(f"corpus: {path} ({len(texts)} documents, {mb:.1f} MB); threads={a.threads}")

    n_tokens = sum(len(x) + 1 for x in enc.encode_ordinary_batch(texts, num_threads=a.threads))

    def raw() -> float:
        t0 = time.perf_counter()
        out = enc.encode_ordinary_batch(texts, num_threads=a.threads)
        dt = time.perf_counter() - t0
        return (sum(len(x) for x in out) + len(out)) / dt

    base = dict(path=path, tokenizer=a.tokenizer, seq_len=a.seq_len, val_fraction=0.0,
                shuffle_buffer=a.shuffle_buffer, num_threads=a.threads, num_workers=a.workers)
    per_batch = a.batch_size * (a.seq_len + 1)
    n_batches = max(1, int(a.epochs * n_tokens / per_batch))

    def stream() -> float:
        s = build_train_stream(dict(base, mode="stream"), batch_size=a.batch_size)
        t0 = time.perf_counter()  # start-up (worker processes, buffer fill) included
        it = iter(s)
        for _ in range(n_batches):
            next(it)
        dt = time.perf_counter() - t0
        it.close()
        # every window that went through the pipeline: the batches and the full buffer
        return (n_batches * a.batch_size + a.shuffle_buffer) * (a.seq_len + 1) / dt

    prep_dir = tmp / "prepared"
    prepare(path, prep_dir, tokenizer=a.tokenizer, val_fraction=0.0, num_threads=a.threads)

    def prepared() -> float:
        s = build_train_stream(dict(base, mode="prepared", prepared_dir=str(prep_dir)),
                               batch_size=a.batch_size)
        it, n = iter(s), 0
        t0 = time.perf_counter()
        while (dt := time.perf_counter() - t0) < a.seconds:
            for _ in range(50):
                next(it)
            n += 50
        return n * per_batch / dt

    def raw_numpy() -> float:
        from leviathan.data.tokens import DocEncoder

        encoder = DocEncoder(a.tokenizer, a.threads)
        t0 = time.perf_counter()
        n = encoder.encode(texts).size
        return n / (time.perf_counter() - t0)

    r = s = rn = 0.0
    for _ in range(a.repeats):  # alternate, so both see the same machine load
        r, s, rn = max(r, raw()), max(s, stream()), max(rn, raw_numpy())
    print(f"raw tiktoken encode_ordinary_batch: {r / 1e6:8.3f} M tokens/s ({n_tokens:,} tokens)")
    print(f"streaming pipeline:                 {s / 1e6:8.3f} M tokens/s "
          f"({n_batches} batches of {a.batch_size}x{a.seq_len + 1}, buffer "
          f"{a.shuffle_buffer}, workers {a.workers}); stream/raw = {s / r:.2f} (target >= 0.7)")
    print(f"tiktoken buffer path (encode_to_numpy): {rn / 1e6:8.3f} M tokens/s; "
          f"stream/that = {s / rn:.2f}")
    pr = _best(prepared, a.repeats)
    print(f"prepared reader:                    {pr / 1e6:8.1f} M tokens/s (target >= 50)")
    stages = stage_times(path, a)
    print("stream stages, one pass (s): " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    table = workers_table(base, a, n_batches)
    print(json.dumps({"raw_tokens_per_s": round(r), "stream_tokens_per_s": round(s),
                      "raw_numpy_tokens_per_s": round(rn),
                      "prepared_tokens_per_s": round(pr), "stream_over_raw": round(s / r, 3),
                      "stream_over_raw_numpy": round(s / rn, 3),
                      "stage_s": {k: round(v, 4) for k, v in stages.items()},
                      "workers_table": {str(k): round(v) for k, v in table.items()},
                      "threads": a.threads, "workers": a.workers, "tokens": n_tokens,
                      "documents": len(texts)}))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def workers_table(base: dict, a, n_batches: int) -> dict[int, float]:
    """The stream's steady tokens/s (after its first batch: worker start-up excluded) with
    data.num_workers = k (one tokenizer thread each) for k in --workers-table; printed with
    the scaling k_rate / (k x one-worker rate)."""
    from leviathan.data import build_train_stream

    def one(k: int) -> float:  # steady state: from the first batch on (start-up excluded)
        st = build_train_stream(dict(base, mode="stream", num_workers=k, num_threads=1),
                                batch_size=a.batch_size)
        it = iter(st)
        next(it)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        dt = time.perf_counter() - t0
        it.close()
        return n_batches * a.batch_size * (a.seq_len + 1) / dt

    table = {k: max(one(k) for _ in range(a.repeats))
             for k in [int(x) for x in a.workers_table.split(",") if x.strip()]}
    if table:
        base_rate = table.get(1) or next(iter(table.values()))
        print("workers  tokens/s    scaling (k-worker rate / (k x one-worker rate))")
        for k, v in table.items():
            print(f"{k:7d}  {v / 1e6:7.3f} M  {v / (k * base_rate):.2f}")
    return table


def stage_times(path: str, a) -> dict[str, float]:
    """Seconds of each stage of the stream over one pass of the corpus, run one after the other
    in this thread (what the stream overlaps in its reader and encoder threads)."""
    import numpy as np

    from leviathan.data.config import DataConfig
    from leviathan.data.pipeline import doc_groups
    from leviathan.data.reading import SkipStats, resolve_shards
    from leviathan.data.tokens import DocEncoder, Packer

    cfg = DataConfig(path=path, tokenizer=a.tokenizer, seq_len=a.seq_len, val_fraction=0.0,
                     mode="stream", num_threads=a.threads)
    t0, groups = time.perf_counter(), []
    for texts, pos, _ in doc_groups(cfg, resolve_shards(path), 0, 1, (0, 0, 0), SkipStats()):
        if pos[0] >= 1:
            break
        groups.append(texts)
    t_read = time.perf_counter() - t0
    encoder, packer = DocEncoder(a.tokenizer, a.threads), Packer(a.seq_len + 1)
    t0 = time.perf_counter()
    ids = [encoder.encode(t) for t in groups]
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    windows = [packer.push(x) for x in ids]
    t_pack = time.perf_counter() - t0
    rows = np.concatenate(windows)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()  # the buffer's work per window: a random slot swapped, batched
    buf = rows[: a.shuffle_buffer].copy()
    batch = []
    for row in rows[a.shuffle_buffer:]:
        j = rng.integers(len(buf))
        batch.append(buf[j].copy())
        buf[j] = row
        if len(batch) == a.batch_size:
            np.stack(batch).astype(np.int64)
            batch = []
    t_shuffle = time.perf_counter() - t0
    return {"read": t_read, "tokenize": t_tok, "pack": t_pack, "shuffle_batch": t_shuffle}


if __name__ == "__main__":
    sys.exit(main())
