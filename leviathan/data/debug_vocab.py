"""`debug_2k`: a small real tiktoken vocabulary for mechanics tests and debug runs.

A 2,048-id byte-level BPE (2,047 mergeable tokens + ``<|endoftext|>`` = 2047) whose merges are
the first ones of o200k_base that its own BPE can reach: the 256 single bytes, then o200k_base's
multi-byte tokens in o200k_base's rank order, each kept only if BPE with the tokens kept so far
produces it, until 2,047 are kept. Same pre-tokenizer pattern as o200k_base. Any text encodes
(byte fallback) and decodes back exactly, so every pipeline stage runs for real with a head of
2k rows instead of 200k (torchtitan's debug model does the same with its test tokenizer).

The vocabulary ships as ``debug_2k.tiktoken`` beside this file (nothing is downloaded);
leviathan.data.tokenizer.get_encoding loads it after checking DEBUG_VOCABS' sha256.
``python -m leviathan.data.debug_vocab build o200k_base.tiktoken`` rebuilds it byte for byte
(tests/unit/test_data_debug_vocab.py checks).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENDOFTEXT = "<|endoftext|>"

# name -> (mergeable tokens, sha256 of the shipped .tiktoken file)
DEBUG_VOCABS: dict[str, tuple[int, str]] = {
    "debug_2k": (2047, "74e87e2685274b29b4b35915d621fece0adefa6f549c53f20781783556189f3e"),
}

# o200k_base's pre-tokenizer (tiktoken_ext/openai_public.py), frozen here with the vocabulary:
# a debug encoding must not change when tiktoken does.
PAT_STR = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",  # noqa: E501
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",  # noqa: E501
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


def is_debug_vocab(name: str) -> bool:
    return name in DEBUG_VOCABS


def vocab_path(name: str) -> Path:
    return HERE / f"{name}.tiktoken"


def _bpe(ranks: dict[bytes, int], piece: bytes) -> list[bytes]:
    """Byte-level BPE of one piece: merge the adjacent pair of lowest rank until none is known."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best = min(range(len(parts) - 1),
                   key=lambda i: ranks.get(parts[i] + parts[i + 1], 1 << 62))
        merged = parts[best] + parts[best + 1]
        if merged not in ranks:
            break
        parts[best:best + 2] = [merged]
    return parts


def build(o200k_ranks: dict[bytes, int], n_tokens: int) -> dict[bytes, int]:
    """The first ``n_tokens`` reachable tokens of o200k_base, renumbered densely (see module)."""
    ordered = sorted(o200k_ranks, key=o200k_ranks.__getitem__)
    singles = [t for t in ordered if len(t) == 1]
    if len(singles) != 256:
        raise ValueError(f"expected the 256 single bytes in the source vocabulary, "
                         f"found {len(singles)}")
    ranks = {t: i for i, t in enumerate(singles)}
    for tok in ordered:
        if len(ranks) >= n_tokens:
            break
        if len(tok) == 1:
            continue
        trial = dict(ranks)
        trial[tok] = len(ranks)
        if _bpe(trial, tok) == [tok]:  # reachable: BPE of its own bytes ends on it
            ranks = trial
    if len(ranks) < n_tokens:
        raise ValueError(f"only {len(ranks)} reachable tokens, {n_tokens} asked")
    return ranks


def to_tiktoken_file(ranks: dict[bytes, int]) -> bytes:
    """tiktoken's vocabulary format: one ``base64(token) rank`` line per token, by rank."""
    return b"".join(base64.b64encode(t) + b" %d\n" % r
                    for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))


def read_ranks(path: Path) -> dict[bytes, int]:
    from tiktoken.load import load_tiktoken_bpe

    return load_tiktoken_bpe(str(path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leviathan.data.debug_vocab",
                                description="Rebuild a debug vocabulary from o200k_base.tiktoken.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write leviathan/data/<name>.tiktoken from o200k_base")
    b.add_argument("o200k", type=Path, help="o200k_base.tiktoken (e.g. ../shared/tokenizers/)")
    b.add_argument("--name", default="debug_2k", choices=sorted(DEBUG_VOCABS))
    b.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from leviathan.logs import setup_logging

    setup_logging()
    n, _ = DEBUG_VOCABS[args.name]
    data = to_tiktoken_file(build(read_ranks(args.o200k), n))
    out = args.out or vocab_path(args.name)
    out.write_bytes(data)
    print(f"wrote {out}: {n} tokens + {ENDOFTEXT}, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
