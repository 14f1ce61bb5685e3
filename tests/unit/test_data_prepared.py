"""Prepared mode: `python -m leviathan.data.prepare` output, the global window sequence (DDP ==
accumulation), epochs, exact resume, tokenizer checks, auto-preparation, frequencies."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO
from helpers.corpora import write_bad_corpus, write_corpus

from leviathan.data import (
    DataError,
    build_train_stream,
    build_val_batches,
    check_data,
    fingerprint,
    token_frequencies,
)
from leviathan.data.prepare import prepare
from leviathan.data.reading import SkipStats, is_val, iter_docs, resolve_shards
from leviathan.data.tokenizer import get_encoding

O200K_SHA = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep_corpus")
    write_corpus(root / "shards", n_docs=150, n_shards=4)
    write_bad_corpus(root / "shards" / "bad")
    r = subprocess.run([sys.executable, "-m", "leviathan.data.prepare", str(root / "shards"),
                        "--out", str(root / "prepared"), "--val-fraction", "0.2",
                        "--num-threads", "2"], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert "train tokens" in r.stdout and "truncated=1" in r.stdout
    return root


def _cfg(root, **kw):
    base = dict(path=str(root / "shards"), mode="prepared", prepared_dir=str(root / "prepared"),
                seq_len=15, val_fraction=0.2, val_tokens=1024, shuffle_buffer=8)
    return {**base, **kw}


def _docs(root):
    return [d for p in resolve_shards(root / "shards") for d in iter_docs(p, SkipStats())]


def _encode(texts):
    enc = get_encoding("o200k_base")
    return np.array([t for x in texts for t in enc.encode_ordinary(x) + [enc.eot_token]],
                    np.uint32)


def test_prepared_files_and_index(corpus):
    index = json.loads((corpus / "prepared" / "index.json").read_text())
    assert index["tokenizer"] == "o200k_base" and index["vocab_hash"] == O200K_SHA
    docs = _docs(corpus)
    train = [d for d in docs if not is_val(d.text, 0.2)]
    val = [d for d in docs if is_val(d.text, 0.2)]
    assert index["train_docs"] == len(train) and index["val_docs"] == len(val) and val
    tb = np.fromfile(corpus / "prepared" / "train.bin", np.uint32)
    vb = np.fromfile(corpus / "prepared" / "val.bin", np.uint32)
    assert np.array_equal(tb, _encode([d.text for d in train]))  # EOT after every document
    assert np.array_equal(vb, _encode([d.text for d in val]))
    assert index["train_tokens"] == len(tb) and index["val_tokens"] == len(vb)
    for split in ("train", "val"):
        for k in ("docs", "tokens"):
            assert sum(s[f"{split}_{k}"] for s in index["sources"].values()) == \
                index[f"{split}_{k}"]
    by_source = {}
    for d in train:
        by_source[d.source] = by_source.get(d.source, 0) + 1
    assert {k: v["train_docs"] for k, v in index["sources"].items() if v["train_docs"]} == \
        by_source
    counts = np.load(corpus / "prepared" / "token_counts.npy")
    assert counts.dtype == np.int64 and counts.shape == (200019,)
    assert np.array_equal(counts, np.bincount(tb, minlength=200019))
    assert index["skipped"]["counts"]["truncated"] == 1
    assert np.array_equal(token_frequencies(_cfg(corpus)), counts)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_see_what_accumulation_sees(corpus, world_size):
    B = 5
    single = build_train_stream(_cfg(corpus), batch_size=B * world_size)
    ranks = [build_train_stream(_cfg(corpus), batch_size=B, rank=r, world_size=world_size)
             for r in range(world_size)]
    n_iter = single.n // (B * world_size) + 3  # into the second epoch
    its = [iter(s) for s in ranks]
    for i, big in zip(range(n_iter), single, strict=False):
        parts = [next(it) for it in its]
        assert torch.equal(big, torch.cat(parts)), f"step {i}"


def test_each_epoch_is_a_permutation_of_all_windows(corpus):
    s = build_train_stream(_cfg(corpus), batch_size=1)
    n = s.n
    W = np.fromfile(corpus / "prepared" / "train.bin", np.uint32)[:n * 16].reshape(n, 16)
    it = iter(s)
    e0 = np.stack([next(it)[0].numpy() for _ in range(n)])
    e1 = np.stack([next(it)[0].numpy() for _ in range(n)])
    key = sorted(map(bytes, W.astype(np.int64)))
    assert sorted(map(bytes, e0)) == key and sorted(map(bytes, e1)) == key
    assert not np.array_equal(e0, e1) and not np.array_equal(e0, W)
    assert not np.array_equal(e0, np.stack([b[0].numpy() for b in _take_seed(corpus, n)]))


def _take_seed(corpus, n, seed=1):
    it = iter(build_train_stream(_cfg(corpus, seed=seed), batch_size=1))
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("n", [0, 7, 400])
def test_exact_resume(corpus, n):
    cfg = _cfg(corpus)
    it = iter(build_train_stream(cfg, batch_size=4, rank=1, world_size=2))
    ref = [next(it) for _ in range(n + 5)]
    s = build_train_stream(cfg, batch_size=4, rank=1, world_size=2)
    it = iter(s)
    for _ in range(n):
        next(it)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    fresh = build_train_stream(cfg, batch_size=4, rank=1, world_size=2)
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    it = iter(fresh)
    assert all(torch.equal(next(it), r) for r in ref[n:])
    with pytest.raises(DataError, match="batch_size: 4 != 8"):
        build_train_stream(cfg, batch_size=8, rank=1, world_size=2).load_state_dict(
            s.state_dict())


def test_val_batches_match_stream_mode_and_are_fixed(corpus):
    vp = build_val_batches(_cfg(corpus), batch_size=8)
    vs = build_val_batches(_cfg(corpus, mode="stream"), batch_size=8)
    assert len(vp) > 1 and len(vp) == len(vs)
    assert all(torch.equal(a, b) for a, b in zip(vp, vs, strict=True))
    assert sum(len(b) for b in vp) == 1024 // 16


def test_stats_and_fingerprint(corpus):
    s = build_train_stream(_cfg(corpus), batch_size=4)
    assert s.stats.counts["truncated"] == 1 and s.stats.counts["empty"] == 3
    f = fingerprint(_cfg(corpus), batch_size=4)
    assert f == fingerprint(_cfg(corpus), batch_size=4)
    assert f != fingerprint(_cfg(corpus, seed=3), batch_size=4)


def test_other_tokenizer_fails_before_training(corpus, tmp_path):
    prepare(corpus / "shards", tmp_path / "cl100k", tokenizer="cl100k_base", val_fraction=0.2)
    cfg = _cfg(corpus, prepared_dir=str(tmp_path / "cl100k"))
    msg = r"prepared with tokenizer 'cl100k_base', but data\.tokenizer='o200k_base'"
    with pytest.raises(DataError, match=msg):
        check_data(cfg)
    with pytest.raises(DataError, match=msg):
        build_train_stream(cfg, batch_size=2)
    assert check_data(dict(cfg, tokenizer="cl100k_base")).tokenizer == "cl100k_base"
    idx = tmp_path / "cl100k" / "index.json"
    idx.write_text(idx.read_text().replace('"vocab_hash": "2', '"vocab_hash": "3'))
    with pytest.raises(DataError, match="vocabulary of sha256 3"):
        check_data(dict(cfg, tokenizer="cl100k_base"))
    with pytest.raises(DataError, match=r"val_fraction=0\.2, but data\.val_fraction=0\.1"):
        check_data(_cfg(corpus, val_fraction=0.1))


def test_missing_prepared_dir_names_path_and_command(tmp_path, corpus):
    cfg = _cfg(corpus, prepared_dir=str(tmp_path / "nope"))
    with pytest.raises(DataError, match=rf"data\.prepared_dir: {tmp_path}/nope/index\.json not "
                                        r"found; build it with `python -m leviathan\.data\."
                                        r"prepare"):
        check_data(cfg)


def test_auto_prepare_builds_once(tmp_path):
    cfg = dict(path=str(tmp_path / "mini"), mode="prepared", prepared_dir=str(tmp_path / "prep"),
               auto_prepare=True, build_corpus="minipile", minipile_mb=0.2, seq_len=32,
               val_fraction=0.05)
    check_data(cfg)  # nothing exists yet, but it can be built
    b = next(iter(build_train_stream(cfg, batch_size=2)))
    assert b.shape == (2, 33)
    index = tmp_path / "prep" / "index.json"
    mtime = index.stat().st_mtime_ns
    build_train_stream(cfg, batch_size=2)
    assert index.stat().st_mtime_ns == mtime
    assert json.loads(index.read_text())["sources"].keys() >= {"Github", "Pydoc Topics"}
    with pytest.raises(DataError, match="already holds a prepared dataset"):
        prepare(tmp_path / "mini", tmp_path / "prep")


def test_prepare_rejects_empty_input(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x.jsonl").write_text('{"text": ""}\n{"oops"\n')
    with pytest.raises(DataError, match="no usable documents.*empty=1.*malformed_json=1"):
        prepare(tmp_path / "s", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_state_of_an_earlier_batch(corpus):
    s = build_train_stream(_cfg(corpus), batch_size=4)
    it = iter(s)
    ref = [next(it) for _ in range(10)]
    fresh = build_train_stream(_cfg(corpus), batch_size=4)
    fresh.load_state_dict(s.state_dict(batches=7))
    assert all(torch.equal(a, b) for a, b in zip(iter(fresh), ref[7:], strict=False))
    with pytest.raises(DataError, match="not available"):
        s.state_dict(batches=11)
