"""`python -m leviathan.data.prepare PATH --out DIR`: tokenize shards once into flat uint32 files.

Output directory:
  train.bin, val.bin     uint32 token ids, documents each followed by <|endoftext|>
  token_counts.npy       int64 count of every token id in train.bin (rare-token analysis)
  index.json             tokenizer name and vocabulary sha256, token/document counts per source,
                         the validation rule, skipped records, inputs
The split is by document content hash (see reading.is_val), so it matches streaming mode.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from leviathan.data.config import DataError
from leviathan.data.reading import SkipStats, doc_hash, iter_docs, resolve_shards
from leviathan.data.tokenizer import vocab_hash
from leviathan.data.tokens import DocEncoder
from leviathan.errors import LeviathanError

log = logging.getLogger(__name__)
INDEX = "index.json"
FORMAT = "leviathan-prepared-v1"


def _groups(shards: list[Path], stats: SkipStats, size: int):
    texts, sources = [], []
    for path in shards:
        for doc in iter_docs(path, stats):
            texts.append(doc.text)
            sources.append(doc.source)
            if len(texts) == size:
                yield texts, sources
                texts, sources = [], []
    if texts:
        yield texts, sources


def prepare(path, out_dir, *, tokenizer: str = "o200k_base", val_fraction: float = 0.01,
            num_threads: int = 0, encode_batch_docs: int = 256, force: bool = False) -> dict:
    """Tokenize every document under ``path`` into ``out_dir``; return the index."""
    from leviathan.data.pipeline import threaded  # imports torch: not at `--help`

    out_dir = Path(out_dir)
    shards = resolve_shards(path, key="path")
    if (out_dir / INDEX).is_file() and not force:
        raise DataError(f"{out_dir} already holds a prepared dataset (use --force to rebuild)")
    enc = DocEncoder(tokenizer, num_threads or os.cpu_count() or 1)
    cut = int(val_fraction * 2**64)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    stats, counts = SkipStats(), np.zeros(enc.n_vocab, np.int64)
    sources: dict[str, dict[str, int]] = {}
    t0, stop = time.time(), threading.Event()
    with open(tmp / "train.bin", "wb") as ftrain, open(tmp / "val.bin", "wb") as fval:
        for texts, srcs in threaded(lambda: _groups(shards, stats, encode_batch_docs), stop):
            flat, lengths = enc.encode_lengths(texts)
            val = np.fromiter((val_fraction > 0 and doc_hash(t) < cut for t in texts), bool,
                              len(texts))
            mask = np.repeat(val, np.asarray(lengths) + 1)  # EOT belongs to its document
            train_tokens, val_tokens = flat[~mask], flat[mask]
            ftrain.write(train_tokens.tobytes())
            fval.write(val_tokens.tobytes())
            counts += np.bincount(train_tokens, minlength=enc.n_vocab)
            for src, n, v in zip(srcs, lengths, val, strict=True):
                s = sources.setdefault(src, {"train_docs": 0, "train_tokens": 0,
                                             "val_docs": 0, "val_tokens": 0})
                split = "val" if v else "train"
                s[f"{split}_docs"] += 1
                s[f"{split}_tokens"] += n + 1
    np.save(tmp / "token_counts.npy", counts)
    tot = {k: sum(s[k] for s in sources.values())
           for k in ("train_docs", "train_tokens", "val_docs", "val_tokens")}
    if tot["train_tokens"] == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"path: {path!r} holds no usable documents ({stats.report()})")
    index = {
        "format": FORMAT, "tokenizer": tokenizer, "vocab_hash": vocab_hash(tokenizer),
        "n_vocab": enc.n_vocab, "eot": enc.eot, "dtype": "uint32",
        "val_fraction": val_fraction,
        "split_rule": "blake2b-64(utf-8 text) < val_fraction * 2**64 -> val",
        "files": {"train": "train.bin", "val": "val.bin", "token_counts": "token_counts.npy"},
        **tot, "sources": dict(sorted(sources.items())),
        "token_counts_sha256": hashlib.sha256(counts.tobytes()).hexdigest(),
        "skipped": stats.state_dict(),
        "inputs": [{"path": str(p), "bytes": p.stat().st_size} for p in shards],
        "seconds": round(time.time() - t0, 3),
    }
    (tmp / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    log.info("prepared %s: %d train / %d val tokens; %s", out_dir, tot["train_tokens"],
             tot["val_tokens"], stats.report())
    return index


@contextlib.contextmanager
def file_lock(target: Path):
    """An exclusive lock beside ``target`` (for several ranks/jobs building the same data)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leviathan.data.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="file, directory or glob of Pile-format shards")
    p.add_argument("--out", required=True, help="output directory (data.prepared_dir)")
    p.add_argument("--tokenizer", default="o200k_base")
    p.add_argument("--val-fraction", type=float, default=0.01)
    p.add_argument("--num-threads", type=int, default=0, help="0: all CPU cores")
    p.add_argument("--force", action="store_true", help="rebuild an existing output directory")
    a = p.parse_args(argv)
    from leviathan.logs import setup_logging

    setup_logging()
    try:
        idx = prepare(a.path, a.out, tokenizer=a.tokenizer, val_fraction=a.val_fraction,
                      num_threads=a.num_threads, force=a.force)
    except LeviathanError as e:  # DataError, TokenizerError: the message, not a traceback
        log.error(f"error: {e}")
        return 1
    sk = SkipStats.from_state(idx["skipped"])
    print(f"{a.out}: {idx['train_tokens']:,} train tokens ({idx['train_docs']:,} docs), "
          f"{idx['val_tokens']:,} val tokens ({idx['val_docs']:,} docs) in {idx['seconds']} s")
    for name, s in idx["sources"].items():
        print(f"  {name:24s} {s['train_docs']:8,} docs {s['train_tokens']:12,} tokens")
    print(sk.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
