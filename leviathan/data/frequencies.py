"""Training-split token frequencies, the same in both data modes (the rare-token analysis).

- prepared: the index's counts over the whole training split (written by `prepare`);
- stream: counted over the first `data.freq_tokens` target tokens of the canonical training
  stream, or one pass over it if the corpus is smaller (rank 0 of 1, the config's own order
  and shuffle buffer), once, and cached in `data.freq_cache_dir` under a key made of the data
  config and the stream's fingerprint, so a sweep counts once per corpus and every run of it
  buckets tokens identically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
COUNT_BATCH = 64  # windows per batch while counting
# keys that do not change which tokens the canonical stream yields
_NOT_STREAM = ("num_threads", "encode_batch_docs", "freq_cache_dir", "extra", "val_tokens",
               "auto_prepare", "prepared_dir", "minipile_mb", "build_corpus")


def cache_key(cfg: Any) -> str:
    """What the counts depend on: the stream's config and its first windows' fingerprint."""
    from leviathan.data.api import fingerprint

    conf = {k: v for k, v in cfg.as_dict().items() if k not in _NOT_STREAM}
    first = fingerprint(cfg, batch_size=COUNT_BATCH, windows=COUNT_BATCH)
    blob = json.dumps(conf, sort_keys=True, default=str) + first
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def stream_counts(cfg: Any, n_tokens: int, vocab: int) -> np.ndarray:
    """int64 counts per id over the first `n_tokens` target tokens of the training stream, or
    its first pass when the corpus holds fewer (counting again would only scale the counts)."""
    from tqdm import tqdm

    from leviathan.data.api import build_train_stream

    counts = np.zeros(vocab, dtype=np.int64)
    seen = 0
    stream = build_train_stream(cfg, batch_size=COUNT_BATCH)
    it = iter(stream)
    with tqdm(total=n_tokens, unit="tok", unit_scale=True, desc="token frequencies",
              disable=n_tokens < 5_000_000) as bar:
        while seen < n_tokens and stream.epoch == 0:  # a small corpus: one pass, not n_tokens
            targets = next(it)[:, 1:].reshape(-1).numpy()[: n_tokens - seen]
            counts += np.bincount(targets, minlength=vocab)[:vocab]
            seen += len(targets)
            bar.update(len(targets))
    if hasattr(it, "close"):
        it.close()
    return counts


def token_frequencies(data_cfg: Any) -> np.ndarray | None:
    """int64 count per token id of the training split (see the module docstring); None when
    the stream-mode prefix is switched off (data.freq_tokens=0)."""
    from leviathan.data.api import ensure_data
    from leviathan.data.config import to_data_config
    from leviathan.data.prepare import INDEX
    from leviathan.data.prepared import Prepared
    from leviathan.data.tokenizer import get_encoding

    cfg = to_data_config(data_cfg)
    if cfg.mode == "prepared" or (cfg.prepared_dir and (Path(cfg.prepared_dir) / INDEX).is_file()):
        return Prepared(ensure_data(cfg)).token_counts()
    if not cfg.freq_tokens:
        return None
    path = None
    if cfg.freq_cache_dir:
        path = Path(cfg.freq_cache_dir) / f"counts-{cache_key(cfg)}-{cfg.freq_tokens}.npy"
        if path.is_file():
            return np.load(path)
    log.info("data: counting token frequencies over the first %d training tokens", cfg.freq_tokens)
    counts = stream_counts(cfg, cfg.freq_tokens, get_encoding(cfg.tokenizer).n_vocab)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
        np.save(tmp, counts)
        os.replace(tmp, path)  # concurrent jobs may count too: the last identical write wins
    return counts
