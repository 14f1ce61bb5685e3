"""Offline tokenizer: staging checks tiktoken's sha256, names files as tiktoken does, and a
missing vocabulary gives an error that says which file and variable to provide."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, TOKENIZERS

from leviathan.data.tokenizer import (
    TokenizerError,
    get_encoding,
    identify,
    known_vocab_files,
    stage,
)
from leviathan.data.tokens import DocEncoder, Packer

O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def _env(cache):
    return {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}


def test_hashes_come_from_tiktoken_and_match_shared_sums():
    sums = dict(line.split()[::-1] for line in (TOKENIZERS / "SHA256SUMS").read_text().split(
        "\n") if line.strip())
    files = known_vocab_files()
    assert files["o200k_base"].url == O200K_URL
    for name in ("o200k_base", "cl100k_base"):
        assert files[name].sha256 == sums[f"{name}.tiktoken"]


def test_stage_places_file_under_sha1_of_url(tmp_path):
    dest = stage(TOKENIZERS / "o200k_base.tiktoken", cache_dir=tmp_path / "cache")
    assert dest.name == hashlib.sha1(O200K_URL.encode()).hexdigest()
    assert dest.read_bytes() == (TOKENIZERS / "o200k_base.tiktoken").read_bytes()
    assert stage(TOKENIZERS / "o200k_base.tiktoken", cache_dir=tmp_path / "cache") == dest


def test_stage_rejects_corrupt_and_unknown_files(tmp_path):
    good = (TOKENIZERS / "o200k_base.tiktoken").read_bytes()
    corrupt = tmp_path / "o200k_base.tiktoken"
    corrupt.write_bytes(good[:-100])
    with pytest.raises(TokenizerError, match="sha256 mismatch.*o200k_base.tiktoken"):
        stage(corrupt, cache_dir=tmp_path / "cache")
    other = tmp_path / "mystery.bin"
    other.write_bytes(b"not a vocabulary")
    with pytest.raises(TokenizerError, match="unknown vocabulary file .*mystery.bin"):
        stage(other, cache_dir=tmp_path / "cache")
    with pytest.raises(TokenizerError, match="not found"):
        identify(tmp_path / "nope.tiktoken")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_cli_stage_then_offline_load(tmp_path):
    cache = tmp_path / "cache"
    r = subprocess.run([sys.executable, "-m", "leviathan.data.tokenizer", "stage",
                        str(TOKENIZERS / "o200k_base.tiktoken"), "--cache-dir", str(cache)],
                       capture_output=True, text=True, env=_env(tmp_path / "unused"), cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "o200k_base" in r.stdout
    r = subprocess.run([sys.executable, "-m", "leviathan.data.tokenizer", "check", "o200k_base"],
                       capture_output=True, text=True, env=_env(cache), cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "n_vocab=200019 eot=199999" in r.stdout


def test_missing_vocabulary_error_says_what_to_do(tmp_path):
    code = ("from leviathan.data.tokenizer import get_encoding\n"
            "get_encoding('o200k_base')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_env(tmp_path / "empty"), cwd=REPO)
    assert r.returncode != 0
    err = r.stderr
    assert "TokenizerError" in err
    assert O200K_URL in err and "TIKTOKEN_CACHE_DIR" in err
    assert "python -m leviathan.data.tokenizer stage o200k_base.tiktoken" in err
    assert hashlib.sha1(O200K_URL.encode()).hexdigest() in err


def test_unknown_encoding_name():
    with pytest.raises(TokenizerError, match="unknown tiktoken encoding 'o300k'"):
        get_encoding("o300k")


def test_o200k_roundtrip_and_eot():
    enc = get_encoding("o200k_base")
    assert enc.n_vocab == 200019 and enc.eot_token == 199999
    text = "Leviathan maps token ids to vectors. <|endoftext|> stays text."
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == text
    assert 199999 not in ids  # special tokens in documents are never control tokens


def test_flatten_and_pack_without_padding():
    enc = DocEncoder("o200k_base", 1)
    flat = enc._join([np.array(x, np.uint32) for x in ([1, 2, 3], [4], [])])
    eot = enc.eot
    assert flat.tolist() == [1, 2, 3, eot, 4, eot, eot] and flat.dtype == np.uint32
    flat[flat == eot] = 9
    p = Packer(3)
    assert p.push(flat[:2]).shape == (0, 3)
    w = p.push(flat[2:])
    assert w.tolist() == [[1, 2, 3], [9, 4, 9]] and p.leftover.tolist() == [9]


@pytest.mark.parametrize("threads", [1, 3])
def test_doc_encoder_gives_encode_ordinary_ids(threads):
    """The buffer path gives exactly encode_ordinary's ids, special-token text and lone
    surrogates included, in order, with EOT after each document."""
    enc = DocEncoder("o200k_base", threads)
    texts = ["plain text", "<|endoftext|> is text here", "Ünïcödé 🐋", "lone \ud800 surrogate",
             "", "x" * 5000]
    ids, lengths = enc.encode_lengths(texts)
    want = []
    for t in texts:
        want += enc.enc.encode_ordinary(t) + [enc.eot]
    assert ids.tolist() == want and lengths == [len(enc.enc.encode_ordinary(t)) for t in texts]
    assert enc.encode(texts).tolist() == want
