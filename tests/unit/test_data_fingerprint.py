"""The streamed windows are a fixed function of the corpus: a stored fingerprint of the first
windows of a fixed corpus (special-token text, non-ASCII, a lone surrogate included) holds the
stream byte for byte across changes to how it is computed (issue 28)."""

from __future__ import annotations

import pytest
from helpers.corpora import make_docs, write_shard

from leviathan.data import fingerprint

# sha256 of the first 64 windows of 32 + 1 tokens, o200k_base; written with the stream as it
# was before the encoder moved to encode_to_numpy (tiktoken's list path). Change it only for
# a change that is meant to alter the token stream, and say so.
FINGERPRINTS = {  # data.num_workers -> fingerprint (the threads never change the stream)
    0: "637afd019be1bb809cc3b62d74a2da3f1163d220b5b3c133a41f75c20507f496",
    2: "699c254a697c900db23399d59809afb96a4df23e5e8fd58056a2f59bcd078420",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fingerprint_corpus")
    docs = make_docs(90, seed=7)
    docs[3]["text"] += " <|endoftext|> spelled out, and <|fim_prefix|> too"
    docs[5]["text"] = ("Ünïcödé — 日本語のテキスト, emoji 🐋🐋 and tabs\tand\nnewlines "
                       + docs[5]["text"])
    docs[8]["text"] += " a lone surrogate \ud800 in the middle"
    for i in range(3):
        write_shard(root / f"shard-{i}.jsonl{'.zst' if i == 1 else ''}", docs[i::3])
    return root


@pytest.mark.parametrize("workers,threads", [(0, 1), (0, 2), (2, 1)])
def test_streamed_windows_match_the_stored_fingerprint(corpus, workers, threads):
    cfg = dict(path=str(corpus), mode="stream", seq_len=32, shuffle_buffer=16, val_fraction=0.0,
               encode_batch_docs=5, num_threads=threads, num_workers=workers)
    got = fingerprint(cfg, batch_size=8, windows=64)
    assert got == FINGERPRINTS[workers], got
