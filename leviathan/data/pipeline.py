"""The producing side of streaming mode: shard parts -> training documents -> token windows.

A sub-stream (one slot = rank x worker) reads its shard parts epoch after epoch, drops the
validation documents, encodes groups of documents with tiktoken's threaded batch encoder and
packs them into windows. Everything is a pure function of the start position (epoch, part,
line) and the packer's leftover tokens, which is what makes resuming exact. A sub-stream runs
either in threads of this process (reader thread + encoder thread: tiktoken releases the GIL)
or in a DataLoader worker process (SubStreams), so JSON parsing scales past one core.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from leviathan.data.config import DataConfig, DataError, n_val_windows
from leviathan.data.reading import SkipStats, assign_shards, is_val, iter_docs, resolve_shards
from leviathan.data.tokens import DocEncoder, Packer

_DONE = object()


def epoch_parts(shards: list, seed: int, epoch: int, slot: int, n_slots: int):
    """This slot's shard parts in epoch ``epoch`` (a new shard order every epoch)."""
    perm = np.random.default_rng([seed, epoch, 0x5A4D]).permutation(len(shards))
    return assign_shards([shards[i] for i in perm], slot, n_slots)


def threaded(make: Callable[[], Iterator], stop: threading.Event, maxsize: int = 4) -> Iterator:  # noqa: C901 - the producer thread's start/stop/error protocol in one place
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


def encode_chunks(cfg: DataConfig, shards: list, slot: int, n_slots: int,
                  start: tuple[int, int, int], leftover: np.ndarray, stats: dict,
                  threads: int, stop: threading.Event) -> Iterator[_Chunk]:
    """One sub-stream's chunks from ``start``: documents are read in a background thread
    while the previous group is being encoded."""
    encoder, packer = DocEncoder(cfg.tokenizer, threads), Packer(cfg.seq_len + 1, leftover)
    stats0 = SkipStats.from_state(stats)
    groups = threaded(lambda: doc_groups(cfg, shards, slot, n_slots, start, stats0), stop)
    for texts, pos, st in groups:
        windows = packer.push(encoder.encode(texts))
        yield _Chunk(windows, pos, packer.leftover.copy(), st)


def _identity(x):
    return x


class SubStreams(torch.utils.data.IterableDataset):
    """Worker v of a DataLoader with len(starts) workers runs sub-stream v (slot slots[v]) and
    yields (v, chunk)."""

    def __init__(self, cfg: DataConfig, shards: list, slots: list[int], n_slots: int,
                 starts: list[tuple], threads: int):
        super().__init__()
        self.cfg, self.shards, self.slots, self.n_slots = cfg, shards, slots, n_slots
        self.starts, self.threads = starts, threads

    def __iter__(self) -> Iterator[tuple[int, _Chunk]]:
        v = torch.utils.data.get_worker_info().id
        pos, leftover, stats = self.starts[v]
        for ch in encode_chunks(self.cfg, self.shards, self.slots[v], self.n_slots, pos,
                                leftover, stats, self.threads, threading.Event()):
            yield v, ch

    def loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self, batch_size=None, num_workers=len(self.starts),
                                           collate_fn=_identity, prefetch_factor=4)


def stream_val_windows(cfg: DataConfig) -> np.ndarray:
    """The fixed validation windows (n, seq_len + 1): held-out documents in shard order,
    packed, up to data.val_tokens tokens of whole windows."""
    window = cfg.seq_len + 1
    want = n_val_windows(cfg)
    if want == 0 or cfg.val_fraction == 0:
        return np.empty((0, window), np.uint32)
    encoder, packer = DocEncoder(cfg.tokenizer, cfg.threads), Packer(window)
    stats, got, texts = SkipStats(quiet=True), [], []  # the training stream reports them
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
