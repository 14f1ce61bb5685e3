"""Streaming mode: packing with <|endoftext|>, rank splitting, shuffle buffer, exact resume,
identical streams and fingerprints, the validation split, bad records, config errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers.corpora import write_bad_corpus, write_corpus
from omegaconf import OmegaConf

from leviathan.data import (
    DataError,
    build_train_stream,
    build_val_batches,
    check_data,
    fingerprint,
    to_data_config,
    token_frequencies,
)
from leviathan.data.reading import SkipStats, is_val, iter_docs, resolve_shards
from leviathan.data.stream import epoch_parts
from leviathan.data.tokenizer import get_encoding


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_corpus")
    write_corpus(root, n_docs=120, n_shards=5)
    return root


def _cfg(path, **kw):
    base = dict(path=str(path), mode="stream", seq_len=31, shuffle_buffer=1, val_fraction=0.0,
                val_tokens=2048, encode_batch_docs=7, num_threads=2)
    return {**base, **kw}


def _expected_tokens(cfg: dict, epoch: int = 0, slot: int = 0, n_slots: int = 1) -> np.ndarray:
    """The slot's training documents in reading order, encoded, EOT after each."""
    enc = get_encoding("o200k_base")
    out = []
    for p in epoch_parts(resolve_shards(cfg["path"]), cfg.get("seed", 0), epoch, slot, n_slots):
        for d in iter_docs(p.path, SkipStats(), part=p.part, n_parts=p.n_parts):
            if not is_val(d.text, cfg["val_fraction"]):
                out += enc.encode_ordinary(d.text) + [enc.eot_token]
    return np.array(out)


def _take(stream, n):
    it = iter(stream)
    out = [next(it) for _ in range(n)]
    it.close()
    return out


@pytest.mark.parametrize("world_size", [1, 2])
def test_windows_are_the_packed_document_stream(corpus, world_size):
    cfg = _cfg(corpus)
    for rank in range(world_size):
        want = _expected_tokens(cfg, slot=rank, n_slots=world_size)
        n = len(want) // 32 // 3 - 1  # batches of 3 windows within the first epoch
        batches = _take(build_train_stream(cfg, batch_size=3, rank=rank,
                                           world_size=world_size), n)
        assert all(b.shape == (3, 32) and b.dtype == torch.int64 for b in batches)
        got = torch.cat(batches).flatten().numpy()
        assert np.array_equal(got, want[:len(got)])  # no padding, EOT between documents


def test_ranks_read_disjoint_documents(corpus):
    cfg = _cfg(corpus)
    a, b = _expected_tokens(cfg, slot=0, n_slots=2), _expected_tokens(cfg, slot=1, n_slots=2)
    assert len(a) + len(b) == len(_expected_tokens(cfg))
    x = _take(build_train_stream(cfg, batch_size=2, rank=0, world_size=2), 5)
    y = _take(build_train_stream(cfg, batch_size=2, rank=1, world_size=2), 5)
    assert not any(torch.equal(p, q) for p, q in zip(x, y, strict=True))


def test_shuffle_buffer_permutes_nearby_windows(corpus):
    cfg = _cfg(corpus, shuffle_buffer=16)
    want = _expected_tokens(cfg)
    windows = want[:len(want) // 32 * 32].reshape(-1, 32)
    got = torch.cat(_take(build_train_stream(cfg, batch_size=4), 20)).numpy()
    assert not np.array_equal(got, windows[:80])  # shuffled ...
    rows = {w.tobytes() for w in windows[:80 + 16]}
    assert all(w.tobytes() in rows for w in got)  # ... from a 16-window horizon
    assert len({w.tobytes() for w in got}) == 80  # and never repeated


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_corpus")
    write_corpus(root, n_docs=16, n_shards=3)
    return root


@pytest.mark.parametrize("n", [0, 1, 13, 70])
def test_exact_resume(small_corpus, n):
    cfg = _cfg(small_corpus, shuffle_buffer=24)
    epoch_windows = len(_expected_tokens(cfg)) // 32
    ref = _take(build_train_stream(cfg, batch_size=4), n + 8)
    s = build_train_stream(cfg, batch_size=4)
    it = iter(s)
    for _ in range(n):
        next(it)
    if n == 70:
        assert 4 * n > epoch_windows + 24 and s.epoch >= 1  # resumes in a later epoch
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    it.close()
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    fresh = build_train_stream(cfg, batch_size=4)
    fresh.load_state_dict(state)
    got = _take(fresh, 8)
    assert all(torch.equal(a, b) for a, b in zip(got, ref[n:], strict=True))
    assert fresh.batches == n + 8


def test_resume_refuses_other_settings(corpus):
    s = build_train_stream(_cfg(corpus), batch_size=4)
    _take(s, 2)
    other = build_train_stream(_cfg(corpus, seed=1), batch_size=4)
    with pytest.raises(DataError, match="seed: 0 != 1"):
        other.load_state_dict(s.state_dict())


def test_identical_streams_for_dense_and_leviathan(corpus):
    data = _cfg(corpus, shuffle_buffer=16)
    runs = [OmegaConf.create({"model": {"arm": arm, "head": head, "size": "109M"},
                              "trainer": {"batch_size": 4}, "data": data})
            for arm, head in (("dense", "tied"), ("leviathan", "generator"))]
    a, b = (_take(build_train_stream(r.data, batch_size=4), 6) for r in runs)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    fa, fb = (fingerprint(r, batch_size=4, k=3) for r in runs)  # whole run configs work too
    assert fa == fb and len(fa) == 64
    assert fingerprint(dict(data, seed=1), batch_size=4, k=3) != fa
    assert fingerprint(data, batch_size=4, k=3) == fa


def test_validation_split_is_held_out_and_fixed(tmp_path):
    write_corpus(tmp_path, n_docs=300, n_shards=3)
    cfg = _cfg(tmp_path, val_fraction=0.2, val_tokens=3000)
    texts = [d.text for p in resolve_shards(tmp_path) for d in iter_docs(p, SkipStats())]
    val_docs = [t for t in texts if is_val(t, 0.2)]
    assert 30 < len(val_docs) < 100
    enc = get_encoding("o200k_base")
    val_stream = np.array([t for d in val_docs for t in enc.encode_ordinary(d) + [enc.eot_token]])
    vb = build_val_batches(cfg, batch_size=8)
    assert vb == [] or all(b.shape[0] <= 8 and b.shape[1] == 32 for b in vb)
    got = torch.cat(vb).flatten().numpy()
    assert len(got) == 3000 // 32 * 32
    assert np.array_equal(got, val_stream[:len(got)])  # only held-out documents, in order
    assert all(torch.equal(x, y) for x, y in zip(vb, build_val_batches(cfg, batch_size=8),
                                                 strict=True))
    train = _expected_tokens(cfg)  # what the training stream must be (checked above)
    batches = _take(build_train_stream(cfg, batch_size=4), len(train) // 128)
    flat = torch.cat(batches).flatten().numpy()
    assert np.array_equal(flat, train[:len(flat)])
    assert len(train) + len(val_stream) == len(_expected_tokens(dict(cfg, val_fraction=0.0)))


def test_bad_records_never_crash_and_are_reported(tmp_path):
    kept, first = write_bad_corpus(tmp_path)
    s = build_train_stream(_cfg(tmp_path), batch_size=4)
    it = iter(s)
    while s.epoch == 0:  # the whole first pass
        next(it)
    for _ in range(30):  # and well into the second: records are counted once
        next(it)
    it.close()
    assert s.stats.counts == {"malformed_json": 1, "no_text": 3, "non_utf8": 2, "empty": 3,
                              "truncated": 1}
    assert s.stats.first == first and s.stats.docs == len(kept)
    assert "truncated=1" in s.stats.report()


def test_dataloader_workers_run_the_stream(corpus):
    s = build_train_stream(_cfg(corpus), batch_size=2)
    dl = torch.utils.data.DataLoader(s, batch_size=None, num_workers=2)
    it = iter(dl)
    got = [next(it) for _ in range(6)]
    del it
    # batches alternate between worker 0 and worker 1, which read different shards
    w0 = _expected_tokens(_cfg(corpus), slot=0, n_slots=2)
    w1 = _expected_tokens(_cfg(corpus), slot=1, n_slots=2)
    assert np.array_equal(torch.cat(got[0::2]).flatten().numpy(), w0[:6 * 32])
    assert np.array_equal(torch.cat(got[1::2]).flatten().numpy(), w1[:6 * 32])


def test_token_frequencies_in_streaming_mode_count_a_cached_prefix(corpus, tmp_path):
    """Stream mode counts the targets of the first data.freq_tokens training tokens (rank 0 of
    1), caches them by config and fingerprint, and is switched off by freq_tokens=0."""
    from leviathan.data import frequencies

    cfg = _cfg(corpus, freq_tokens=1000, freq_cache_dir=str(tmp_path / "counts"))
    vocab = get_encoding("o200k_base").n_vocab
    counts = token_frequencies(cfg)
    windows = torch.cat(_take(build_train_stream(cfg, batch_size=frequencies.COUNT_BATCH), 1))
    direct = np.bincount(windows[:, 1:].reshape(-1).numpy()[:1000], minlength=vocab)
    assert counts.sum() == 1000 and np.array_equal(counts, direct)
    cached = list((tmp_path / "counts").glob("counts-*-1000.npy"))
    assert len(cached) == 1
    np.save(cached[0], counts * 7)  # a second call reads the cache instead of counting again
    assert np.array_equal(token_frequencies(cfg), counts * 7)
    assert len(set((tmp_path / "counts").glob("*.npy"))) == 1
    other = token_frequencies(dict(cfg, seed=3))  # another stream: its own counts and file
    assert other.sum() == 1000 and len(list((tmp_path / "counts").glob("*.npy"))) == 2
    assert token_frequencies(dict(cfg, freq_tokens=0)) is None
    # a corpus smaller than freq_tokens is counted over one pass, not looped over
    one_pass = len(_expected_tokens(cfg))
    whole = token_frequencies(dict(cfg, freq_tokens=10**12, freq_cache_dir=None))
    assert 0.5 * one_pass <= whole.sum() <= 1.5 * one_pass, (whole.sum(), one_pass)


@pytest.mark.parametrize("override,key", [
    ({"mode": "memmap"}, "data.mode"),
    ({"seq_len": 0}, "data.seq_len"),
    ({"bogus": 1}, "data.bogus"),
    ({"val_fraction": 1.5}, "data.val_fraction"),
    ({"path": None}, "data.path"),
    ({"tokenizer": "o300k"}, "data.tokenizer"),
    ({"mode": "prepared"}, "data.prepared_dir"),
])
def test_config_errors_name_the_key(corpus, override, key):
    with pytest.raises(DataError, match=key.replace(".", r"\.")):
        check_data({**_cfg(corpus), **override})


def test_path_matching_nothing_fails_before_training(tmp_path):
    with pytest.raises(DataError, match=rf"data\.path: '{tmp_path}/nothing/\*\.jsonl\.zst'"):
        check_data(_cfg(f"{tmp_path}/nothing/*.jsonl.zst"))
    with pytest.raises(DataError, match="data.path"):
        build_train_stream(_cfg(tmp_path / "nothing"), batch_size=2)


def test_hydra_config_store_schema():
    from hydra.core.config_store import ConfigStore

    from leviathan.config import register_schemas

    register_schemas()
    node = ConfigStore.instance().load("data/schema.yaml").node
    assert node.seq_len == 512 and node.shuffle_buffer == 10_000
    assert node.tokenizer == "o200k_base"
    assert to_data_config(OmegaConf.merge(node, {"path": "x"})).path == "x"


@pytest.mark.parametrize("n,ahead", [(0, 1), (5, 1), (40, 3), (60, 8)])
def test_exact_resume_under_a_prefetching_trainer(small_corpus, n, ahead):
    """The trainer fetched `ahead` batches it has not trained on: the batch wrapper keeps them
    and the stream's own state is its current one (no undo log in the hot loop)."""
    from leviathan.training.batches import ResumableBatches

    cfg = _cfg(small_corpus, shuffle_buffer=24)
    ref = _take(build_train_stream(cfg, batch_size=4), n + 6)
    s = ResumableBatches(build_train_stream(cfg, batch_size=4))
    it = iter(s)
    for b in [next(it) for _ in range(n + ahead)][:n]:
        s.consume(b)
    state = s.data_state()
    assert state["stream"]["batches"] == n + ahead and len(state["pending"]) == ahead
    fresh = ResumableBatches(build_train_stream(cfg, batch_size=4))
    fresh.load_data_state(state)
    assert all(torch.equal(a, b) for a, b in zip(_take(fresh, 6), ref[n:], strict=True))
    it.close()


def test_closed_streams_leave_no_threads(corpus):
    import threading
    import time

    for _ in range(3):
        it = iter(build_train_stream(_cfg(corpus, shuffle_buffer=4), batch_size=2))
        next(it)
        it.close()
    deadline = time.time() + 5
    while time.time() < deadline and any(t.name == "leviathan-data"
                                         for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "leviathan-data"]


def _interleave(*seqs):
    n = min(len(s) for s in seqs)
    return np.stack([s[i] for i in range(n) for s in seqs])


@pytest.mark.parametrize("rank,world_size", [(0, 1), (1, 2)])
def test_worker_processes_merge_sub_streams_in_turn(corpus, rank, world_size):
    cfg = _cfg(corpus, num_workers=2)
    subs = [_expected_tokens(cfg, slot=rank * 2 + v, n_slots=world_size * 2) for v in (0, 1)]
    want = _interleave(*(t[:len(t) // 32 * 32].reshape(-1, 32) for t in subs))
    got = torch.cat(_take(build_train_stream(cfg, batch_size=3, rank=rank,
                                             world_size=world_size), 40)).numpy()
    assert np.array_equal(got, want[:len(got)])


@pytest.mark.parametrize("n,ahead", [(9, 0), (30, 2)])
def test_exact_resume_with_worker_processes(small_corpus, n, ahead):
    cfg = _cfg(small_corpus, shuffle_buffer=24, num_workers=2)
    ref = _take(build_train_stream(cfg, batch_size=4), n + 6)
    from leviathan.training.batches import ResumableBatches

    s = ResumableBatches(build_train_stream(cfg, batch_size=4))
    it = iter(s)
    for b in [next(it) for _ in range(n + ahead)][:n]:
        s.consume(b)
    buf = io.BytesIO()
    torch.save(s.data_state(), buf)
    it.close()
    fresh = ResumableBatches(build_train_stream(cfg, batch_size=4))
    fresh.load_data_state(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(_take(fresh, 6), ref[n:], strict=True))
    with pytest.raises(DataError, match="num_workers: 2 != 0"):
        build_train_stream(dict(cfg, num_workers=0), batch_size=4).load_state_dict(
            s.stream.state_dict())


def test_no_validation_when_val_tokens_is_zero(corpus):
    assert build_val_batches(_cfg(corpus, val_fraction=0.1, val_tokens=0), batch_size=4) == []
    assert build_val_batches(_cfg(corpus, val_fraction=0.0), batch_size=4) == []
