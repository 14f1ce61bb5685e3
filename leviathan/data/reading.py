"""Reading Pile-format shards: JSON lines `{"text": ..., "meta": {"pile_set_name": ...}}`.

Shards are `.jsonl`, `.jsonl.zst` (zstandard, streamed) or `.jsonl.gz`. Bad records are skipped
and counted by reason with the first file:line of each; they never raise.
Shards are split over "slots" (ranks x DataLoader workers) so no document is read twice or
skipped: with at least as many shards as slots, whole shards go round-robin to slots; with
fewer, every shard is split by line number modulo the number of slots.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from leviathan.data.config import DataError
from leviathan.errors import LeviathanError

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.gz")
UNKNOWN_SOURCE = "unknown"


def _is_shard(p: Path) -> bool:
    return p.is_file() and p.name.endswith(SUFFIXES)


def resolve_shards(path: str | os.PathLike | list, key: str = "data.path") -> list[Path]:
    """Sorted shard files for a file, a directory (searched recursively) or a glob.

    Several paths may be given as a list or comma-separated. Raises DataError naming the path
    when nothing matches.
    """
    if path is None or path == "":
        raise DataError(f"{key}: no path given")
    parts = path if isinstance(path, list | tuple) else str(path).split(",")
    out: set[Path] = set()
    for part in parts:
        part = os.path.expanduser(str(part).strip())
        p = Path(part)
        if p.is_dir():
            found = [q for q in p.rglob("*") if _is_shard(q)]
        elif p.is_file():
            found = [p]
        else:
            found = [Path(q) for q in glob.glob(part, recursive=True) if _is_shard(Path(q))]
        if not found:
            what = "directory has no" if p.is_dir() else "matches no"
            raise DataError(f"{key}: {part!r} {what} Pile-format shards "
                            f"({', '.join(SUFFIXES)})")
        out.update(q.resolve() for q in found)
    return sorted(out)


@dataclass
class SkipStats:
    """Skipped records by reason, with the first file:line of each."""

    counts: dict[str, int] = field(default_factory=dict)  # reason -> records skipped
    first: dict[str, str] = field(default_factory=dict)  # reason -> "file:line" of the first
    docs: int = 0  # documents accepted (train and val)
    quiet: bool = False  # do not log (a re-read of records already reported)

    def skip(self, reason: str, where: str) -> None:
        if reason not in self.counts and not self.quiet:
            self.first[reason] = where
            log.warning("data: skipping %s record at %s (further ones are counted)", reason,
                        where)
        self.counts[reason] = self.counts.get(reason, 0) + 1

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: SkipStats) -> None:
        for r, n in other.counts.items():
            self.first.setdefault(r, other.first[r])
            self.counts[r] = self.counts.get(r, 0) + n
        self.docs += other.docs

    def report(self) -> str:
        if not self.counts:
            return f"data: {self.docs} documents read, none skipped"
        parts = [f"{r}={n} (first at {self.first[r]})" for r, n in sorted(self.counts.items())]
        return f"data: {self.docs} documents read, {self.skipped} skipped: " + "; ".join(parts)

    def state_dict(self) -> dict:
        return {"counts": dict(self.counts), "first": dict(self.first), "docs": self.docs}

    @classmethod
    def from_state(cls, state: dict) -> SkipStats:
        return cls(dict(state["counts"]), dict(state["first"]), int(state["docs"]))


class TruncatedError(LeviathanError, EOFError):
    """A compressed shard ended before its end-of-stream marker."""


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed byte chunks of a shard, streamed; TruncatedError if it is cut short."""
    name = path.name
    with open(path, "rb") as f:
        if name.endswith(".zst"):
            import zstandard

            dctx = zstandard.ZstdDecompressor()
            dobj, started = dctx.decompressobj(), False
            while chunk := f.read(size):
                started = True
                yield dobj.decompress(chunk)
                while dobj.eof and dobj.unused_data:  # a following frame
                    rest, dobj = dobj.unused_data, dctx.decompressobj()
                    yield dobj.decompress(rest)
            if started and not dobj.eof:
                raise TruncatedError("zstd stream ended before the end-of-frame marker")
        elif name.endswith(".gz"):
            with gzip.GzipFile(fileobj=f) as g:
                while chunk := g.read1(size):
                    yield chunk
        else:
            while chunk := f.read(size):
                yield chunk


def iter_lines(path: Path) -> Iterator[bytes]:
    """Lines (without the newline) of a decompressed shard, never fully in memory. A partial
    last line of a truncated file is dropped (the error is raised instead)."""
    pending: list[bytes] = []
    for chunk in _chunks(path):
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        if pending:
            chunk = b"".join(pending) + chunk
            pending = []
        lines = chunk.split(b"\n")
        pending.append(lines.pop())
        yield from lines
    tail = b"".join(pending)
    if tail:
        yield tail


@dataclass(frozen=True)
class Doc:
    text: str  # the document
    source: str  # meta.pile_set_name (or "unknown")
    line: int  # 0-based line number in its shard


def iter_docs(path: Path, stats: SkipStats, *, start_line: int = 0, part: int = 0,
              n_parts: int = 1) -> Iterator[Doc]:
    """Good documents of one shard from line ``start_line`` on, only lines with
    ``line % n_parts == part``. Bad ones are counted in ``stats``; a truncated or unreadable
    file ends the shard (counted once, at the line where it broke)."""
    lineno = -1
    try:
        for lineno, raw in enumerate(iter_lines(path)):
            if lineno < start_line or lineno % n_parts != part:
                continue
            doc = parse_line(raw, path, lineno, stats)
            if doc is not None:
                yield doc
    except Exception as e:  # truncated zstd/gzip, corrupt frames, I/O errors: never crash
        reason = "truncated" if isinstance(e, EOFError) else "read_error"
        stats.skip(reason, f"{path}:{lineno + 2}")
        if not stats.quiet:
            log.warning("data: %s: %s (%s); the rest of this shard is skipped", path, reason,
                        e)


def parse_line(raw: bytes, path: Path, lineno: int, stats: SkipStats) -> Doc | None:
    where = f"{path}:{lineno + 1}"
    if not raw.strip():
        stats.skip("empty", where)
        return None
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.skip("non_utf8", where)
        return None
    try:
        rec = json.loads(s)
    except ValueError:
        stats.skip("malformed_json", where)
        return None
    text = rec.get("text") if isinstance(rec, dict) else None
    if not isinstance(text, str):
        stats.skip("no_text", where)
        return None
    if not text.strip():
        stats.skip("empty", where)
        return None
    try:
        text.encode("utf-8")  # lone surrogates from \ud800 escapes
    except UnicodeEncodeError:
        stats.skip("non_utf8", where)
        return None
    meta = rec.get("meta")
    source = meta.get("pile_set_name") if isinstance(meta, dict) else None
    stats.docs += 1
    return Doc(text, source if isinstance(source, str) and source else UNKNOWN_SOURCE, lineno)


@dataclass(frozen=True)
class ShardPart:
    path: Path  # the shard file
    part: int  # this slot reads lines with line % n_parts == part
    n_parts: int  # 1 when the whole shard belongs to one slot


def assign_shards(shards: list[Path], slot: int, n_slots: int) -> list[ShardPart]:
    """The shard parts slot ``slot`` of ``n_slots`` reads (slot = rank * workers + worker)."""
    if not 0 <= slot < n_slots:
        raise ValueError(f"slot {slot} out of range for {n_slots} slots")
    if len(shards) >= n_slots:
        return [ShardPart(p, 0, 1) for p in shards[slot::n_slots]]
    return [ShardPart(p, slot, n_slots) for p in shards]


def current_slot(rank: int, world_size: int) -> tuple[int, int]:
    """(slot, n_slots) of this process: rank * workers + worker inside a DataLoader worker."""
    import torch

    info = torch.utils.data.get_worker_info()
    if info is None:
        return rank, world_size
    return rank * info.num_workers + info.id, world_size * info.num_workers


def __getattr__(name: str):
    """`DocumentStream` is defined on first use: it subclasses torch's IterableDataset, and
    reading shards (prepare, and its `--help`) needs no torch."""
    if name == "DocumentStream":
        globals()[name] = cls = _document_stream_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _document_stream_class() -> type:
    import torch

    class DocumentStream(torch.utils.data.IterableDataset):
        """One pass over this rank's (and DataLoader worker's) share of the documents; an
        IterableDataset-compatible iterable yielding (source, text)."""

        def __init__(self, path, *, rank: int = 0, world_size: int = 1):
            super().__init__()
            self.shards, self.rank, self.world_size = resolve_shards(path), rank, world_size
            self.stats = SkipStats()

        def __iter__(self) -> Iterator[tuple[str, str]]:
            for p in assign_shards(self.shards, *current_slot(self.rank, self.world_size)):
                for doc in iter_docs(p.path, self.stats, part=p.part, n_parts=p.n_parts):
                    yield doc.source, doc.text

    DocumentStream.__qualname__ = "DocumentStream"  # pickled by name, as a module-level class
    return DocumentStream


def doc_hash(text: str) -> int:
    """64-bit content hash of a document (blake2b), independent of its position."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def is_val(text: str, val_fraction: float) -> bool:
    """Whether a document belongs to the validation split (by content hash)."""
    return val_fraction > 0 and doc_hash(text) < int(val_fraction * 2**64)
