"""`python -m leviathan.bench data`: raw tiktoken vs the streaming pipeline vs the prepared reader.

All three see the same documents (a minipile corpus, or --path) and the same thread count:
  raw       tiktoken encode_ordinary_batch over the documents already in memory
  stream    build_train_stream(mode=stream): read + parse + encode + pack + shuffle + batch,
            timed from iter() (start-up included) over --epochs passes; counts every window
            that went through the pipeline (the batches and the filled shuffle buffer)
  prepared  build_train_stream(mode=prepared): gather windows from the uint32 memmap
Targets: stream / raw >= 0.7; prepared >= 50M tokens/s. The last line is one JSON object.
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

    r = s = 0.0
    for _ in range(a.repeats):  # alternate, so both see the same machine load
        r, s = max(r, raw()), max(s, stream())
    print(f"raw tiktoken encode_ordinary_batch: {r / 1e6:8.3f} M tokens/s ({n_tokens:,} tokens)")
    print(f"streaming pipeline:                 {s / 1e6:8.3f} M tokens/s "
          f"({n_batches} batches of {a.batch_size}x{a.seq_len + 1}, buffer "
          f"{a.shuffle_buffer}, workers {a.workers}); stream/raw = {s / r:.2f} (target >= 0.7)")
    pr = _best(prepared, a.repeats)
    print(f"prepared reader:                    {pr / 1e6:8.1f} M tokens/s (target >= 50)")
    print(json.dumps({"raw_tokens_per_s": round(r), "stream_tokens_per_s": round(s),
                      "prepared_tokens_per_s": round(pr), "stream_over_raw": round(s / r, 3),
                      "threads": a.threads, "workers": a.workers, "tokens": n_tokens,
                      "documents": len(texts)}))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
