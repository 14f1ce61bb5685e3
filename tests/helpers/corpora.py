"""Small Pile-format corpora written on the spot, for tests and examples: good documents from
several sources, and a shard of every kind of bad record (with the expected skip counts)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

WORDS = ("the model reads tokens and every layer mixes them; a generator maps each id to a "
         "vector through a small network over coordinates. Scaling laws fit loss against "
         "parameters, and matched pairs see the identical stream of batches").split()
SOURCES = ("Pile-CC", "Github", "ArXiv", "Wikipedia (en)")


def write_shard(path: str | Path, lines: list[bytes | str | dict]) -> Path:
    """Write raw lines (dicts are JSON-encoded) to .jsonl, .jsonl.zst or .jsonl.gz by suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = b"".join((json.dumps(x).encode() if isinstance(x, dict) else
                    x.encode() if isinstance(x, str) else x) + b"\n" for x in lines)
    if path.name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdCompressor(level=3).compress(raw)
    elif path.name.endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
    path.write_bytes(raw)
    return path


def make_docs(n: int, seed: int = 0, sources=SOURCES) -> list[dict]:
    """n distinct Pile records of 20-400 words, sources cycling."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 400))]
        text = f"Document {seed}-{i}. " + " ".join(words) + f" ({rng.random():.6f})"
        out.append({"text": text, "meta": {"pile_set_name": sources[i % len(sources)]}})
    return out


def write_corpus(root: str | Path, n_docs: int = 200, n_shards: int = 4, seed: int = 0,
                 formats=(".jsonl", ".jsonl.zst", ".jsonl.gz")) -> list[dict]:
    """n_docs good records over n_shards shards of mixed formats; returns the records in
    shard order (shard i holds records i::n_shards)."""
    docs = make_docs(n_docs, seed)
    for i in range(n_shards):
        write_shard(Path(root) / f"shard-{i:02d}{formats[i % len(formats)]}", docs[i::n_shards])
    return docs


def write_bad_corpus(root: str | Path, seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """A corpus with each kind of bad record. Returns (the good records, reason -> the
    "file:line" where its first bad record is)."""
    import zstandard

    root = Path(root)
    good = make_docs(6, seed)
    a = write_shard(root / "a.jsonl", [
        good[0], b'{"text": "unterminated', good[1], {"meta": {"pile_set_name": "X"}},
        b'{"text": "caf\xe9 latin-1"}', {"text": ""}, b"", {"text": 42}, good[2],
        {"text": "   \n"}, b"[1, 2, 3]", good[3], b'{"text": "\\ud800 lone surrogate"}',
    ])
    write_shard(root / "b.jsonl.gz", good[4:6])
    tail = make_docs(400, seed + 1)
    raw = b"".join(json.dumps(d).encode() + b"\n" for d in tail)
    comp = zstandard.ZstdCompressor(level=3).compress(raw)
    c = root / "c.jsonl.zst"
    c.write_bytes(comp[: len(comp) * 2 // 3])  # truncated
    # which complete lines survive the cut decides where the truncation is reported
    n_lines = _complete_lines(c)
    first = {"malformed_json": f"{a}:2", "no_text": f"{a}:4", "non_utf8": f"{a}:5",
             "empty": f"{a}:6", "truncated": f"{c}:{n_lines + 1}"}
    kept = good[:6] + tail[:n_lines]
    return kept, first


def _complete_lines(path: Path) -> int:
    import zstandard

    data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    return data.count(b"\n")
