"""The debug_2k vocabulary: a real tiktoken encoding of 2,048 ids shipped with the package."""

from __future__ import annotations

import hashlib

import pytest

SAMPLES = ["Hello world! The quick brown fox jumps over 12345 lazy dogs.",
           "naïve café — 日本語のテキスト, emoji 🦑 and tabs\t\tand\r\nnewlines\n\n",
           "<|endoftext|> written in the text stays text", ""]


def test_rebuilding_from_o200k_gives_the_shipped_file_byte_for_byte(tiktoken_cache):
    from helpers import TOKENIZERS

    from leviathan.data.debug_vocab import DEBUG_VOCABS, build, read_ranks, to_tiktoken_file

    n, digest = DEBUG_VOCABS["debug_2k"]
    data = to_tiktoken_file(build(read_ranks(TOKENIZERS / "o200k_base.tiktoken"), n))
    assert hashlib.sha256(data).hexdigest() == digest


def test_debug_2k_is_a_real_byte_level_encoding():
    from leviathan.data.debug_vocab import vocab_path
    from leviathan.data.tokenizer import get_encoding, vocab_hash

    enc = get_encoding("debug_2k")
    assert (enc.n_vocab, enc.eot_token) == (2048, 2047)
    for text in SAMPLES:
        ids = enc.encode_ordinary(text)
        assert enc.decode(ids) == text and all(0 <= i < 2047 for i in ids)
    # merges are used (not bytes only): common English compresses well below one id per byte
    text = SAMPLES[0] * 20
    assert len(enc.encode_ordinary(text)) <= 0.6 * len(text.encode())  # 0.5 today
    assert vocab_hash("debug_2k") == hashlib.sha256(vocab_path("debug_2k").read_bytes()).hexdigest()


def test_a_corrupt_debug_vocabulary_is_refused_naming_the_file(tmp_path, monkeypatch):
    from leviathan.data import debug_vocab, tokenizer

    bad = tmp_path / "debug_2k.tiktoken"
    bad.write_bytes(debug_vocab.vocab_path("debug_2k").read_bytes()[:-10])
    monkeypatch.setattr(debug_vocab, "HERE", tmp_path)
    tokenizer.load_debug.cache_clear()
    try:
        with pytest.raises(tokenizer.TokenizerError,
                           match="sha256 mismatch for .*debug_2k.tiktoken"):
            tokenizer.get_encoding("debug_2k")
        bad.unlink()
        with pytest.raises(tokenizer.TokenizerError, match="debug_2k.tiktoken is missing"):
            tokenizer.get_encoding("debug_2k")
    finally:
        tokenizer.load_debug.cache_clear()

