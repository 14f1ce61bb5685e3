"""The data API training and sweeps use: check, build streams, validation set, fingerprint
(token frequencies: frequencies.py). Every function takes the `data` config (DataConfig, dict
or OmegaConf node)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leviathan.data.config import DataConfig, DataError, n_val_windows, to_data_config
from leviathan.data.prepare import INDEX, file_lock, prepare
from leviathan.data.prepared import Prepared, PreparedTrainStream, check_index, read_index
from leviathan.data.reading import resolve_shards
from leviathan.data.stream import StreamTrainStream, stream_val_windows
from leviathan.data.tokenizer import TokenizerError, get_encoding

log = logging.getLogger(__name__)


def _has_shards(path: str) -> bool:
    try:
        resolve_shards(path)
        return True
    except DataError:
        return False


def check_data(data_cfg: Any) -> DataConfig:
    """Validate the data config and everything it points to, before any work is done.

    Raises DataError naming the key, path or mismatch. Returns the validated DataConfig.
    """
    cfg = to_data_config(data_cfg)
    try:
        get_encoding(cfg.tokenizer)
    except TokenizerError as e:
        raise DataError(f"data.tokenizer={cfg.tokenizer!r}: {e}") from e
    will_build = cfg.build_corpus is not None
    if cfg.mode == "prepared":
        if (Path(cfg.prepared_dir) / INDEX).is_file():
            check_index(read_index(cfg.prepared_dir), cfg)
            return cfg
        if not cfg.auto_prepare:
            read_index(cfg.prepared_dir)  # raises, naming the directory and the command
    if not will_build:
        resolve_shards(cfg.path)
    return cfg


def ensure_data(data_cfg: Any) -> DataConfig:
    """Build what the config says may be built (demo corpus, prepared dataset) if missing."""
    cfg = check_data(data_cfg)
    if cfg.build_corpus == "minipile" and not _has_shards(cfg.path):
        from leviathan.data.minipile import write_minipile

        with file_lock(Path(cfg.path)):
            if not _has_shards(cfg.path):
                write_minipile(cfg.path, mb=cfg.minipile_mb)
    if cfg.mode == "prepared" and not (Path(cfg.prepared_dir) / INDEX).is_file():
        with file_lock(Path(cfg.prepared_dir)):
            if not (Path(cfg.prepared_dir) / INDEX).is_file():
                log.info("data: preparing %s -> %s", cfg.path, cfg.prepared_dir)
                prepare(cfg.path, cfg.prepared_dir, tokenizer=cfg.tokenizer,
                        val_fraction=cfg.val_fraction, num_threads=cfg.threads,
                        encode_batch_docs=cfg.encode_batch_docs)
        check_index(read_index(cfg.prepared_dir), cfg)
    return cfg


def build_train_stream(data_cfg: Any, *, batch_size: int, rank: int = 0, world_size: int = 1):
    """An iterable of LongTensor (batch_size, seq_len + 1) micro-batches, forever, with
    state_dict()/load_state_dict() at batch granularity and `.stats` of skipped records."""
    cfg = ensure_data(data_cfg)
    cls = PreparedTrainStream if cfg.mode == "prepared" else StreamTrainStream
    return cls(cfg, batch_size=batch_size, rank=rank, world_size=world_size)


def val_windows(data_cfg: Any) -> np.ndarray:
    """(n, seq_len + 1) uint32: the fixed validation windows (held-out documents only)."""
    cfg = ensure_data(data_cfg)
    if cfg.mode == "prepared":
        w = Prepared(cfg).windows("val")
        return np.asarray(w[:n_val_windows(cfg)])
    return stream_val_windows(cfg)


def build_val_batches(data_cfg: Any, *, batch_size: int) -> list[torch.Tensor]:
    """The fixed validation set as LongTensors (<= batch_size, seq_len + 1)."""
    w = val_windows(data_cfg)
    if len(w) == 0:
        log.warning("data: the validation split is empty (data.val_fraction too small?)")
    return [torch.from_numpy(w[i:i + batch_size].astype(np.int64))
            for i in range(0, len(w), batch_size)]


def fingerprint(data_cfg: Any, *, batch_size: int, k: int = 8, rank: int = 0,
                world_size: int = 1, windows: int | None = None) -> str:
    """sha256 hex of the first `windows` (default k x batch_size) training windows that `rank`
    of `world_size` reads, in order: equal fingerprints mean identical token streams in that
    rank layout (workers and world size included; the micro-batch size does not matter)."""
    n = windows if windows is not None else k * batch_size
    stream = build_train_stream(data_cfg, batch_size=batch_size, rank=rank,
                                world_size=world_size)
    h = hashlib.sha256()
    h.update(f"rank {rank}/{world_size}".encode())
    it = iter(stream)
    seen = 0
    while seen < n:
        for row in next(it)[: n - seen]:
            h.update(row.numpy().astype("<i8").tobytes())
            seen += 1
    if hasattr(it, "close"):
        it.close()
    return h.hexdigest()
