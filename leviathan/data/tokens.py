"""Tokenization and packing: documents -> o200k_base ids with <|endoftext|> after each document
-> windows of seq_len + 1 tokens, no padding (the remainder waits for the next documents)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from leviathan.data.tokenizer import get_encoding


class DocEncoder:
    """tiktoken encoding on a pool of threads; returns one flat uint32 array per batch.

    Each document goes through `encode_to_tiktoken_buffer` (what Encoding.encode_to_numpy
    calls) with no special token allowed: the ids encode_ordinary gives, as a uint32 buffer
    that numpy wraps without a copy, instead of a Python list of ints that is then copied into
    numpy element by element (that copy was ~30% of the stream's time). The threads run the
    Rust encoder with the GIL released; the pool lives as long as the encoder."""

    def __init__(self, name: str, num_threads: int):
        self.name = name
        self.enc = get_encoding(name)
        self.eot = self.enc.eot_token  # <|endoftext|>
        self.n_vocab = self.enc.n_vocab
        self.num_threads = max(1, num_threads)
        self._pool: ThreadPoolExecutor | None = None
        self._eot = np.array([self.eot], np.uint32)

    def _ids(self, text: str) -> np.ndarray:
        """encode_ordinary(text) as uint32 (special-token text encoded as ordinary text)."""
        core = self.enc._core_bpe  # noqa: SLF001 - the buffer API tiktoken's own numpy path uses
        try:
            buf = core.encode_to_tiktoken_buffer(text, _NO_SPECIAL)
        except UnicodeEncodeError:  # lone surrogates: as encode_ordinary repairs them
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            buf = core.encode_to_tiktoken_buffer(text, _NO_SPECIAL)
        return np.frombuffer(buf, dtype=np.uint32)

    def _encode_all(self, texts: list[str]) -> list[np.ndarray]:
        if self.num_threads == 1 or len(texts) == 1:
            return [self._ids(t) for t in texts]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="tiktoken")
        return list(self._pool.map(self._ids, texts))

    def encode(self, texts: list[str]) -> np.ndarray:
        """(sum(len(doc_i) + 1),) uint32: doc_0 EOT doc_1 EOT ... (special tokens in the text
        are encoded as ordinary text, never as control tokens)."""
        if not texts:
            return np.empty(0, np.uint32)
        return self._join(self._encode_all(texts))

    def encode_lengths(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """As encode, plus each document's token count (EOT excluded)."""
        if not texts:
            return np.empty(0, np.uint32), []
        ids = self._encode_all(texts)
        return self._join(ids), [len(x) for x in ids]

    def _join(self, ids: list[np.ndarray]) -> np.ndarray:
        parts = [self._eot] * (2 * len(ids))
        parts[0::2] = ids
        return np.concatenate(parts)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __del__(self) -> None:
        self.close()


_NO_SPECIAL: frozenset[str] = frozenset()


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
