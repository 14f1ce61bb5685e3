"""Tokenization and packing: documents -> o200k_base ids with <|endoftext|> after each document
-> windows of seq_len + 1 tokens, no padding (the remainder waits for the next documents)."""

from __future__ import annotations

import numpy as np

from leviathan.data.tokenizer import get_encoding


class DocEncoder:
    """tiktoken batch encoding with threads; returns one flat uint32 array per batch."""

    def __init__(self, name: str, num_threads: int):
        self.name = name
        self.enc = get_encoding(name)
        self.eot = self.enc.eot_token  # <|endoftext|>
        self.n_vocab = self.enc.n_vocab
        self.num_threads = max(1, num_threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(sum(len(doc_i) + 1),) uint32: doc_0 EOT doc_1 EOT ... (special tokens in the text
        are encoded as ordinary text, never as control tokens)."""
        if not texts:
            return np.empty(0, np.uint32)
        ids = self.enc.encode_ordinary_batch(texts, num_threads=self.num_threads)
        return flatten_with_eot(ids, self.eot)

    def encode_lengths(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """As encode, plus each document's token count (EOT excluded)."""
        if not texts:
            return np.empty(0, np.uint32), []
        ids = self.enc.encode_ordinary_batch(texts, num_threads=self.num_threads)
        return flatten_with_eot(ids, self.eot), [len(x) for x in ids]


def flatten_with_eot(ids: list[list[int]], eot: int) -> np.ndarray:
    total = sum(len(x) for x in ids) + len(ids)
    out = np.empty(total, np.uint32)
    pos = 0
    for x in ids:
        n = len(x)
        out[pos:pos + n] = x
        out[pos + n] = eot
        pos += n + 1
    return out


class Packer:
    """Cuts a token stream into consecutive windows of ``window`` tokens (no padding)."""

    def __init__(self, window: int, leftover: np.ndarray | None = None):
        self.window = window
        self.leftover = np.empty(0, np.uint32) if leftover is None else \
            np.asarray(leftover, np.uint32)

    def push(self, tokens: np.ndarray) -> np.ndarray:
        """Append tokens; return the completed windows (n, window) uint32."""
        buf = np.concatenate([self.leftover, tokens]) if self.leftover.size else tokens
        n = buf.size // self.window
        self.leftover = buf[n * self.window:].copy()
        return buf[:n * self.window].reshape(n, self.window)
