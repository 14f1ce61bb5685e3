"""Streaming mode: shards -> documents -> tokens -> windows -> seeded shuffle buffer -> batches.

Reading (JSON parsing) and encoding run in two background threads (tiktoken releases the GIL),
so they overlap. Each stage is a pure function of its start position, so the state at a batch
boundary is small and exact: the reader position (epoch, part, line) after the last encoded
chunk, the packer's leftover tokens, that chunk's windows not yet consumed, the shuffle buffer
and its RNG. Restoring it continues with exactly the batch the uninterrupted stream would give.

Slots: a stream iterated inside a DataLoader worker takes slot rank * workers + worker of
world_size * workers (torch.utils.data.get_worker_info); in the main process slot = rank.
Batch-level state_dict/load_state_dict is exact in the main process (num_workers=0).
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from leviathan.data.config import DataConfig, DataError
from leviathan.data.reading import (
    SkipStats,
    assign_shards,
    current_slot,
    is_val,
    iter_docs,
    resolve_shards,
)
from leviathan.data.tokens import DocEncoder, Packer

_DONE = object()
UNDO = 8  # batch boundaries kept for state_dict(batches=...)


def epoch_parts(shards: list, seed: int, epoch: int, slot: int, n_slots: int):
    """This slot's shard parts in epoch ``epoch`` (a new shard order every epoch)."""
    perm = np.random.default_rng([seed, epoch, 0x5A4D]).permutation(len(shards))
    return assign_shards([shards[i] for i in perm], slot, n_slots)


def threaded(make: Callable[[], Iterator], stop: threading.Event, maxsize: int = 4) -> Iterator:
    """Run the generator ``make()`` in a daemon thread; iterate its items here."""
    q: queue.Queue = queue.Queue(maxsize)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in make():
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer
            put(e)

    threading.Thread(target=run, daemon=True, name="leviathan-data").start()
    while True:
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():  # the consumer went away: let this thread end too
                return
            continue
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


@dataclass
class _Chunk:
    windows: np.ndarray  # (n, seq_len + 1) uint32
    pos: tuple[int, int, int]  # (epoch, part index, next line) after this chunk
    leftover: np.ndarray  # packer tokens after this chunk
    stats: dict  # SkipStats state after this chunk


def doc_groups(cfg: DataConfig, shards: list, slot: int, n_slots: int,
               start: tuple[int, int, int], stats: SkipStats):
    """Forever: (training texts, position after them, stats after them), in reading order."""
    epoch, part_i, line = start
    while True:
        parts = epoch_parts(shards, cfg.seed, epoch, slot, n_slots)
        fresh, n_docs = part_i == 0 and line == 0, 0
        # bad records are counted (and logged) in the first pass only
        st = stats if epoch == 0 else SkipStats(quiet=True)
        for pi in range(part_i, len(parts)):
            p, texts = parts[pi], []
            for doc in iter_docs(p.path, st, start_line=line, part=p.part, n_parts=p.n_parts):
                if is_val(doc.text, cfg.val_fraction):
                    continue
                texts.append(doc.text)
                n_docs += 1
                if len(texts) == cfg.encode_batch_docs:
                    yield texts, (epoch, pi, doc.line + 1), stats.state_dict()
                    texts = []
            yield texts, (epoch, pi + 1, 0), stats.state_dict()
            line = 0
        if fresh and n_docs == 0:
            raise DataError(f"data.path: no training documents for slot {slot}/{n_slots} in "
                            f"{len(shards)} shard(s) ({stats.report()})")
        epoch, part_i = epoch + 1, 0


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
        self.batches = 0  # batches yielded so far
        self.pos = (0, 0, 0)  # (epoch, part, line) after the last chunk taken
        self.leftover = np.empty(0, np.uint32)
        self.pending = np.empty((0, self.window), np.uint32)  # windows not yet buffered
        self.buffer: np.ndarray | None = None  # (shuffle_buffer, window) uint32
        self.fill = 0
        self.rng_state: dict | None = None
        self.stats = SkipStats()  # skipped records up to the current position
        self.slot: tuple[int, int] | None = None
        self._log: collections.deque = collections.deque(maxlen=UNDO)  # recent boundaries

    def _key(self) -> dict:
        c = self.cfg
        return {"mode": "stream", "shards": [str(p) for p in self.shards],
                "tokenizer": c.tokenizer, "seq_len": c.seq_len, "seed": c.seed,
                "shuffle_buffer": c.shuffle_buffer, "val_fraction": c.val_fraction,
                "batch_size": self.batch_size, "rank": self.rank, "world_size": self.world_size}

    def __iter__(self) -> Iterator[torch.Tensor]:
        slot = current_slot(self.rank, self.world_size)
        if self.slot is not None and self.slot != slot:
            raise DataError(f"stream state belongs to slot {self.slot}, iterated as {slot}")
        self.slot = slot
        cfg, S, B = self.cfg, self.cfg.shuffle_buffer, self.batch_size
        rng = np.random.default_rng([cfg.seed, slot[0], slot[1], 0x5348])
        if self.rng_state is not None:
            rng.bit_generator.state = self.rng_state
        if self.buffer is None:
            self.buffer = np.empty((S, self.window), np.uint32)
        encoder = DocEncoder(cfg.tokenizer, cfg.threads)
        stop = threading.Event()
        start, leftover = self.pos, self.leftover.copy()
        stats0 = SkipStats.from_state(self.stats.state_dict())

        def encoded() -> Iterator[_Chunk]:
            packer = Packer(self.window, leftover)
            groups = threaded(lambda: doc_groups(cfg, self.shards, *slot, start, stats0), stop)
            for texts, pos, st in groups:
                windows = packer.push(encoder.encode(texts))
                yield _Chunk(windows, pos, packer.leftover.copy(), st)

        chunks = threaded(encoded, stop)
        out = np.empty((B, self.window), np.uint32)
        k, i = 0, 0
        entry = self._boundary(rng)
        try:
            while True:
                while i >= len(self.pending):
                    ch = next(chunks)
                    self.pending, i = ch.windows, 0
                    self.pos, self.leftover = ch.pos, ch.leftover
                    self.stats = SkipStats.from_state(ch.stats)
                w = self.pending[i]
                i += 1
                if self.fill < S:
                    self.buffer[self.fill] = w
                    self.fill += 1
                    continue
                j = int(rng.integers(S))
                out[k] = self.buffer[j]
                entry["replaced"].append((j, out[k].copy()))
                self.buffer[j] = w
                k += 1
                if k == B:
                    k = 0
                    self.batches += 1
                    self.pending, i = self.pending[i:], 0
                    self.rng_state = rng.bit_generator.state
                    self._log.append(entry)
                    entry = self._boundary(rng)
                    yield torch.from_numpy(out.astype(np.int64))  # (B, seq_len + 1)
        finally:
            stop.set()

    def _boundary(self, rng) -> dict:
        """The (cheap, by reference) state at this batch boundary, plus an undo list of the
        buffer rows the next batch replaces."""
        return {"batches": self.batches, "pos": self.pos, "leftover": self.leftover,
                "pending": self.pending, "rng": rng.bit_generator.state,
                "stats": self.stats.state_dict(), "fill": self.fill, "replaced": []}

    def state_dict(self, batches: int | None = None) -> dict:
        """Exact position after ``batches`` batches (default: all yielded so far), as tensors
        and plain values. Any of the last UNDO batch boundaries can be asked for, so a trainer
        that prefetches (Lightning fetches one batch ahead) saves what it has consumed."""
        n = self.batches if batches is None else int(batches)
        buf = self.buffer if self.buffer is not None else np.empty((0, self.window), np.uint32)
        cur = {"pos": self.pos, "leftover": self.leftover, "pending": self.pending,
               "rng": self.rng_state, "stats": self.stats.state_dict(), "fill": self.fill}
        if n != self.batches:
            back = [e for e in self._log if e["batches"] >= n]
            if n > self.batches or not back or back[0]["batches"] != n:
                raise DataError(f"data state after {n} batches is not available: the stream "
                                f"has yielded {self.batches} and keeps the last {UNDO}")
            buf = buf.copy()
            for e in reversed(back):
                for j, row in reversed(e["replaced"]):
                    buf[j] = row
            cur = back[0]
        return {"key": self._key(), "batches": n, "pos": list(cur["pos"]),
                "leftover": torch.from_numpy(cur["leftover"].astype(np.int32)),
                "pending": torch.from_numpy(cur["pending"].astype(np.int32)),
                "buffer": torch.from_numpy(buf[:cur["fill"]].astype(np.int32)),
                "rng": cur["rng"], "slot": list(self.slot) if self.slot else None,
                "stats": cur["stats"]}

    def load_state_dict(self, state: dict) -> None:
        key = self._key()
        diff = [k for k in key if state["key"].get(k) != key[k]]
        if diff:
            raise DataError("data state was saved with other settings: "
                            + ", ".join(f"{k}: {state['key'].get(k)!r} != {key[k]!r}"
                                        for k in diff))
        self.batches = int(state["batches"])
        self.pos = tuple(int(x) for x in state["pos"])
        self.leftover = state["leftover"].numpy().astype(np.uint32)
        self.pending = state["pending"].numpy().astype(np.uint32).reshape(-1, self.window)
        buf = state["buffer"].numpy().astype(np.uint32).reshape(-1, self.window)
        self.buffer = np.empty((self.cfg.shuffle_buffer, self.window), np.uint32)
        self.fill = len(buf)
        self.buffer[:self.fill] = buf
        self.rng_state = state["rng"]
        self.slot = tuple(state["slot"]) if state["slot"] else None
        self.stats = SkipStats.from_state(state["stats"])
        self._log.clear()


def stream_val_windows(cfg: DataConfig) -> np.ndarray:
    """The fixed validation windows (n, seq_len + 1): held-out documents in shard order,
    packed, up to data.val_tokens tokens of whole windows."""
    window = cfg.seq_len + 1
    want = max(1, cfg.val_tokens // window)
    encoder, packer = DocEncoder(cfg.tokenizer, cfg.threads), Packer(window)
    stats, got, texts = SkipStats(), [], []
    n = 0

    def flush() -> None:
        nonlocal n
        w = packer.push(encoder.encode(texts))
        got.append(w)
        n += len(w)
        texts.clear()

    for path in resolve_shards(cfg.path):
        for doc in iter_docs(path, stats):
            if is_val(doc.text, cfg.val_fraction):
                texts.append(doc.text)
                if len(texts) == cfg.encode_batch_docs:
                    flush()
                    if n >= want:
                        break
        if n >= want:
            break
    if texts:
        flush()
    return np.concatenate(got)[:want] if got else np.empty((0, window), np.uint32)
