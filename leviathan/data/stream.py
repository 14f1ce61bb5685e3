"""Streaming mode: sub-streams of windows -> round-robin merge -> seeded shuffle buffer -> batches.

Each rank runs V = max(1, data.num_workers) sub-streams (pipeline.py), sub-stream v reading slot
rank * V + v of world_size * V. With num_workers = 0 the one sub-stream runs in threads of this
process; with num_workers = V > 0 it runs in DataLoader worker v. Windows are merged one per
sub-stream in turn, so the order never depends on timing. The state at a batch boundary is
exact and small: per sub-stream its position after its current chunk, its leftover tokens and
the chunk's unmerged windows; whose turn it is; the shuffle buffer and its RNG. Restoring it
continues with exactly the batch the uninterrupted stream would give.

A stream with num_workers = 0 iterated inside someone else's DataLoader worker takes slot
rank * workers + worker (torch get_worker_info); its state is then per worker.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from leviathan.data.config import DataConfig, DataError
from leviathan.data.pipeline import (
    SubStreams,
    encode_chunks,
    epoch_parts,  # noqa: F401 - re-exported for tests and tools
    stream_val_windows,  # noqa: F401
    threaded,
)
from leviathan.data.reading import SkipStats, current_slot, resolve_shards


@dataclass
class _Sub:
    pos: tuple[int, int, int]  # (epoch, part, line) after its current chunk
    leftover: np.ndarray  # packer tokens after its current chunk
    pending: np.ndarray  # (n, seq_len + 1) windows of its current chunk not yet merged
    stats: dict  # SkipStats state after its current chunk
    i: int = 0  # next row of pending (during iteration)


class StreamTrainStream(torch.utils.data.IterableDataset):
    """Yields LongTensor (batch_size, seq_len + 1) forever; see the module docstring."""

    def __init__(self, cfg: DataConfig, *, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} out of range for world_size {world_size}")
        self.cfg, self.batch_size, self.rank, self.world_size = cfg, batch_size, rank, world_size
        self.shards = resolve_shards(cfg.path)
        self.window = cfg.seq_len + 1
        self.V = max(1, cfg.num_workers)  # sub-streams per rank
        self.batches = 0  # batches yielded so far
        self.subs = [_Sub((0, 0, 0), np.empty(0, np.uint32),
                          np.empty((0, self.window), np.uint32), SkipStats().state_dict())
                     for _ in range(self.V)]
        self.turn = 0  # the sub-stream that gives the next window
        self.buffer: np.ndarray | None = None  # (shuffle_buffer, window) uint32
        self.fill = 0
        self.rng_state: dict | None = None
        self.slot: list | None = None  # [slots, n_slots] this state belongs to

    @property
    def stats(self) -> SkipStats:
        """Skipped records (first pass) up to the current position, over all sub-streams."""
        out = SkipStats()
        for s in self.subs:
            out.merge(SkipStats.from_state(s.stats))
        return out

    @property
    def epoch(self) -> int:  # the epoch every sub-stream has reached
        return min(s.pos[0] for s in self.subs)

    def _key(self) -> dict:
        c = self.cfg
        return {"mode": "stream", "shards": [str(p) for p in self.shards],
                "tokenizer": c.tokenizer, "seq_len": c.seq_len, "seed": c.seed,
                "shuffle_buffer": c.shuffle_buffer, "val_fraction": c.val_fraction,
                "num_workers": c.num_workers, "batch_size": self.batch_size, "rank": self.rank,
                "world_size": self.world_size}

    def _slots(self) -> tuple[list[int], int]:
        if self.cfg.num_workers == 0:
            slot, n_slots = current_slot(self.rank, self.world_size)
            return [slot], n_slots
        return [self.rank * self.V + v for v in range(self.V)], self.world_size * self.V

    def _chunks(self, slots: list[int], n_slots: int, stop: threading.Event):
        """(v, chunk) from every sub-stream, started where the state says."""
        starts = [(s.pos, s.leftover.copy(), s.stats) for s in self.subs]
        if self.cfg.num_workers == 0:
            def run():
                return encode_chunks(self.cfg, self.shards, slots[0], n_slots, *starts[0],
                                     self.cfg.threads, stop)

            for ch in threaded(run, stop):
                yield 0, ch
            return
        threads = max(1, self.cfg.threads // self.V)
        loader = SubStreams(self.cfg, self.shards, slots, n_slots, starts, threads).loader()
        it = iter(loader)
        try:
            yield from it
        finally:
            del it  # shuts the worker processes down

    def __iter__(self) -> Iterator[torch.Tensor]:  # noqa: C901 - the hot loop, kept inline (no per-window call overhead)
        slots, n_slots = self._slots()
        if self.slot is not None and self.slot != [slots, n_slots]:
            raise DataError(f"stream state belongs to slots {self.slot}, iterated as "
                            f"{[slots, n_slots]}")
        self.slot = [slots, n_slots]
        cfg, S, B, V = self.cfg, self.cfg.shuffle_buffer, self.batch_size, self.V
        rng = np.random.default_rng([cfg.seed, slots[0], n_slots, V, 0x5348])
        if self.rng_state is not None:
            rng.bit_generator.state = self.rng_state
        if self.buffer is None:
            self.buffer = np.empty((S, self.window), np.uint32)
        stop = threading.Event()
        source = self._chunks(slots, n_slots, stop)
        received = [collections.deque() for _ in range(V)]  # chunks not yet started
        for s in self.subs:
            s.i = 0
        out = np.empty((B, self.window), np.uint32)
        k = 0
        try:
            while True:
                s = self.subs[self.turn]
                while s.i >= len(s.pending):
                    while not received[self.turn]:
                        v, ch = next(source)
                        received[v].append(ch)
                    ch = received[self.turn].popleft()
                    s.pending, s.i, s.pos, s.leftover, s.stats = \
                        ch.windows, 0, ch.pos, ch.leftover, ch.stats
                w = s.pending[s.i]
                s.i += 1
                self.turn = (self.turn + 1) % V
                if self.fill < S:
                    self.buffer[self.fill] = w
                    self.fill += 1
                    continue
                j = int(rng.integers(S))
                out[k] = self.buffer[j]
                self.buffer[j] = w
                k += 1
                if k == B:
                    k = 0
                    self.batches += 1
                    for s in self.subs:
                        s.pending, s.i = s.pending[s.i:], 0
                    self.rng_state = rng.bit_generator.state
                    yield torch.from_numpy(out.astype(np.int64))  # (B, seq_len + 1)
        finally:
            stop.set()
            source.close()

    def state_dict(self) -> dict:
        """The exact position after the batches yielded so far, as tensors and plain values.
        A trainer that fetches ahead keeps the batches it has not trained on itself
        (leviathan.training.batches.ResumableBatches)."""
        buf = self.buffer if self.buffer is not None else np.empty((0, self.window), np.uint32)
        subs = [{"pos": list(s.pos), "leftover": torch.from_numpy(s.leftover.astype(np.int32)),
                 "pending": torch.from_numpy(s.pending[s.i:].astype(np.int32)),
                 "stats": s.stats} for s in self.subs]
        return {"key": self._key(), "batches": self.batches, "turn": self.turn, "subs": subs,
                "buffer": torch.from_numpy(buf[:self.fill].astype(np.int32)),
                "rng": self.rng_state, "slot": self.slot}

    def load_state_dict(self, state: dict) -> None:
        key = self._key()
        diff = [k for k in key if state["key"].get(k) != key[k]]
        if diff:
            raise DataError("data state was saved with other settings: "
                            + ", ".join(f"{k}: {state['key'].get(k)!r} != {key[k]!r}"
                                        for k in diff))
        L = self.window
        self.batches, self.turn = int(state["batches"]), int(state["turn"])
        self.subs = [_Sub(tuple(int(x) for x in s["pos"]),
                          s["leftover"].numpy().astype(np.uint32),
                          s["pending"].numpy().astype(np.uint32).reshape(-1, L), s["stats"])
                     for s in state["subs"]]
        buf = state["buffer"].numpy().astype(np.uint32).reshape(-1, L)
        self.buffer = np.empty((self.cfg.shuffle_buffer, L), np.uint32)
        self.fill = len(buf)
        self.buffer[:self.fill] = buf
        self.rng_state = state["rng"]
        self.slot = state["slot"]
