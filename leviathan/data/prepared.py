"""Prepared mode: windows of seq_len + 1 tokens read from the uint32 memmaps of `prepare`.

The training windows form one global sequence, a pure function of the data config: epoch e is
a seeded permutation of all windows, epochs follow each other. Rank r of world w takes
micro-batch i = global[(i*w + r)*B : (i*w + r + 1)*B], so DDP over w ranks sees exactly what
one process with w-fold accumulation sees. The state is just the number of batches taken.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from leviathan.data.config import DataConfig, DataError
from leviathan.data.prepare import FORMAT, INDEX
from leviathan.data.reading import SkipStats
from leviathan.data.tokenizer import vocab_hash


def read_index(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / INDEX
    if not path.is_file():
        raise DataError(f"data.prepared_dir: {path} not found; build it with `python -m "
                        f"leviathan.data.prepare <data.path> --out {prepared_dir}` (or set "
                        f"data.auto_prepare=true)")
    try:
        index = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"data.prepared_dir: {path} is not valid JSON ({e})") from e
    if index.get("format") != FORMAT:
        raise DataError(f"data.prepared_dir: {path} has format {index.get('format')!r}, "
                        f"expected {FORMAT!r}")
    return index


def check_index(index: dict, cfg: DataConfig) -> None:
    """Raise DataError if the prepared dataset does not fit the run's data config."""
    where = f"data.prepared_dir={cfg.prepared_dir}"
    if index["tokenizer"] != cfg.tokenizer:
        raise DataError(f"{where} was prepared with tokenizer {index['tokenizer']!r}, but "
                        f"data.tokenizer={cfg.tokenizer!r}; re-run `python -m "
                        f"leviathan.data.prepare` with --tokenizer {cfg.tokenizer}")
    want = vocab_hash(cfg.tokenizer)
    if index["vocab_hash"] != want:
        raise DataError(f"{where} was prepared with a {index['tokenizer']} vocabulary of sha256 "
                        f"{index['vocab_hash']}, the installed one is {want}")
    if abs(float(index["val_fraction"]) - float(cfg.val_fraction)) > 1e-12:
        raise DataError(f"{where} was split with val_fraction={index['val_fraction']}, but "
                        f"data.val_fraction={cfg.val_fraction}")


class Prepared:
    """An opened prepared dataset, checked against the config."""

    def __init__(self, cfg: DataConfig):
        self.cfg, self.dir = cfg, Path(cfg.prepared_dir)
        self.index = read_index(self.dir)
        check_index(self.index, cfg)
        self.window = cfg.seq_len + 1

    def tokens(self, split: str) -> np.ndarray:
        n = int(self.index[f"{split}_tokens"])
        path = self.dir / self.index["files"][split]
        if path.stat().st_size != 4 * n:
            raise DataError(f"data.prepared_dir: {path} has {path.stat().st_size} bytes, the "
                            f"index says {n} uint32 tokens; rebuild it")
        if n == 0:
            return np.empty(0, np.uint32)
        return np.memmap(path, np.uint32, "r", shape=(n,))

    def windows(self, split: str) -> np.ndarray:
        """(n, seq_len + 1) uint32 view of consecutive windows (the tail is dropped)."""
        t = self.tokens(split)
        n = t.size // self.window
        return t[:n * self.window].reshape(n, self.window)

    def token_counts(self) -> np.ndarray:
        return np.load(self.dir / self.index["files"]["token_counts"]).astype(np.int64)


class PreparedTrainStream(torch.utils.data.IterableDataset):
    """Yields LongTensor (batch_size, seq_len + 1) forever from the global window sequence."""

    def __init__(self, cfg: DataConfig, *, batch_size: int, rank: int = 0, world_size: int = 1):
        super().__init__()
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} out of range for world_size {world_size}")
        self.cfg, self.batch_size, self.rank, self.world_size = cfg, batch_size, rank, world_size
        self.data = Prepared(cfg)
        self.W = self.data.windows("train")
        self.n = len(self.W)
        if self.n == 0:
            raise DataError(f"data.prepared_dir: {cfg.prepared_dir} has fewer than "
                            f"seq_len + 1 = {cfg.seq_len + 1} training tokens")
        self.batches = 0  # batches yielded so far
        self.stats = SkipStats.from_state(self.data.index["skipped"])  # bad records at prepare
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng([self.cfg.seed, epoch, 0x5052])
            dtype = np.uint32 if self.n < 2**32 else np.int64
            self._perms[epoch] = rng.permutation(self.n).astype(dtype)
        return self._perms[epoch]

    def window_ids(self, i: int) -> np.ndarray:
        """Indices into the training windows of this rank's micro-batch i."""
        g = (i * self.world_size + self.rank) * self.batch_size + np.arange(self.batch_size)
        epochs, local = np.divmod(g, self.n)
        if epochs[0] == epochs[-1]:
            return self.permutation(int(epochs[0]))[local]
        return np.array([self.permutation(int(e))[j] for e, j in zip(epochs, local,
                                                                      strict=True)])

    def batch(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.W[self.window_ids(i)].astype(np.int64))

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            b = self.batch(self.batches)  # (B, seq_len + 1)
            self.batches += 1
            yield b

    def _key(self) -> dict:
        return {"mode": "prepared", "prepared_dir": str(self.data.dir),
                "train_tokens": int(self.data.index["train_tokens"]), "seed": self.cfg.seed,
                "seq_len": self.cfg.seq_len, "batch_size": self.batch_size, "rank": self.rank,
                "world_size": self.world_size}

    def state_dict(self, batches: int | None = None) -> dict:
        """The position after ``batches`` batches (default: all yielded so far)."""
        n = self.batches if batches is None else int(batches)
        if not 0 <= n <= self.batches:
            raise DataError(f"data state after {n} batches is not available: the stream has "
                            f"yielded {self.batches}")
        return {"key": self._key(), "batches": n}

    def load_state_dict(self, state: dict) -> None:
        key = self._key()
        diff = [k for k in key if k != "prepared_dir" and state["key"].get(k) != key[k]]
        if diff:
            raise DataError("data state was saved with other settings: " + ", ".join(
                f"{k}: {state['key'].get(k)!r} != {key[k]!r}" for k in diff))
        self.batches = int(state["batches"])
