"""Reading Pile-format shards: formats, path forms, bad records, splitting over ranks x workers."""

from __future__ import annotations

import collections
import json
import re

import pytest
import torch
from helpers.corpora import make_docs, write_bad_corpus, write_corpus, write_shard

from leviathan.data import DataError
from leviathan.data.reading import (
    DocumentStream,
    SkipStats,
    assign_shards,
    doc_hash,
    is_val,
    iter_docs,
    resolve_shards,
)


def _read_all(path) -> tuple[list[str], SkipStats]:
    stats = SkipStats()
    return [d.text for p in resolve_shards(path) for d in iter_docs(p, stats)], stats


def test_three_formats_read_identically(tmp_path):
    docs = make_docs(30)
    for suffix in (".jsonl", ".jsonl.zst", ".jsonl.gz"):
        write_shard(tmp_path / suffix[1:] / f"x{suffix}", docs)
        texts, stats = _read_all(tmp_path / suffix[1:])
        assert texts == [d["text"] for d in docs]
        assert stats.docs == 30 and stats.skipped == 0


def test_sources_are_read_from_meta(tmp_path):
    write_shard(tmp_path / "a.jsonl", [{"text": "x y", "meta": {"pile_set_name": "ArXiv"}},
                                       {"text": "no meta"}, {"text": "z", "meta": "junk"}])
    got = [(d.source, d.line) for d in iter_docs(tmp_path / "a.jsonl", SkipStats())]
    assert got == [("ArXiv", 0), ("unknown", 1), ("unknown", 2)]


def test_zst_is_streamed_not_loaded_whole(tmp_path):
    # a 1-frame shard bigger than the read size decodes chunk by chunk
    docs = make_docs(3000, seed=3)
    p = write_shard(tmp_path / "big.jsonl.zst", docs)
    it = iter_docs(p, SkipStats())
    assert next(it).text == docs[0]["text"]
    assert sum(1 for _ in it) == 2999


def test_multi_frame_zst(tmp_path):
    import zstandard

    a, b = make_docs(5, seed=1), make_docs(5, seed=2)
    c = zstandard.ZstdCompressor()
    frames = [c.compress("".join(json.dumps(d) + "\n" for d in part).encode()) for part in (a, b)]
    (tmp_path / "m.jsonl.zst").write_bytes(b"".join(frames))
    texts, stats = _read_all(tmp_path)
    assert texts == [d["text"] for d in a + b] and stats.skipped == 0


def test_path_forms(tmp_path):
    write_corpus(tmp_path / "c", n_docs=20, n_shards=4)
    (tmp_path / "c" / "notes.txt").write_text("not a shard")
    all_ = resolve_shards(tmp_path / "c")
    assert [p.name for p in all_] == ["shard-00.jsonl", "shard-01.jsonl.zst",
                                      "shard-02.jsonl.gz", "shard-03.jsonl"]
    assert resolve_shards(str(tmp_path / "c" / "*.jsonl")) == [all_[0], all_[3]]
    assert resolve_shards(all_[1]) == [all_[1]]
    assert resolve_shards(f"{all_[0]},{all_[2]}") == [all_[0], all_[2]]


@pytest.mark.parametrize("bad", ["missing_dir", "*.jsonl.zst", "empty_dir"])
def test_path_matching_nothing_names_it(tmp_path, bad):
    (tmp_path / "empty_dir").mkdir()
    target = str(tmp_path / bad)
    pattern = rf"data\.path: '{re.escape(target)}' (matches no|directory has no) Pile-format"
    with pytest.raises(DataError, match=pattern):
        resolve_shards(target)


def test_bad_records_skipped_and_counted(tmp_path, caplog):
    kept, first = write_bad_corpus(tmp_path)
    with caplog.at_level("WARNING"):
        texts, stats = _read_all(tmp_path)
    assert texts == [d["text"] for d in kept]
    assert stats.counts == {"malformed_json": 1, "no_text": 3, "non_utf8": 2, "empty": 3,
                            "truncated": 1}
    assert stats.first == first
    assert stats.docs == len(kept)
    report = stats.report()
    for reason, where in first.items():
        assert f"{reason}=" in report and where in report
        assert any(where in r.getMessage() for r in caplog.records)


def test_truncated_gzip_counted(tmp_path):
    p = write_shard(tmp_path / "t.jsonl.gz", make_docs(500))
    p.write_bytes(p.read_bytes()[:-2000])
    texts, stats = _read_all(tmp_path)
    assert stats.counts == {"truncated": 1}
    assert 0 < len(texts) < 500
    assert stats.first["truncated"] == f"{p}:{len(texts) + 1}"


@pytest.mark.parametrize("n_shards,slots", [(7, 3), (2, 5), (4, 4), (1, 2)])
def test_assign_shards_covers_each_document_once(tmp_path, n_shards, slots):
    docs = write_corpus(tmp_path, n_docs=53, n_shards=n_shards)
    shards = resolve_shards(tmp_path)
    seen = collections.Counter()
    for s in range(slots):
        for part in assign_shards(shards, s, slots):
            seen.update(d.text for d in iter_docs(part.path, SkipStats(), part=part.part,
                                                  n_parts=part.n_parts))
    assert seen == collections.Counter(d["text"] for d in docs)


def test_dataloader_workers_and_ranks_split_documents(tmp_path):
    docs = write_corpus(tmp_path, n_docs=61, n_shards=3)
    seen = collections.Counter()
    per_rank = []
    for rank in range(2):
        ds = DocumentStream(tmp_path, rank=rank, world_size=2)
        dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        got = [text for _source, text in dl]
        per_rank.append(len(got))
        seen.update(got)
    assert seen == collections.Counter(d["text"] for d in docs)  # none twice, none skipped
    assert all(n > 0 for n in per_rank)


def test_validation_rule_is_a_content_hash():
    texts = [d["text"] for d in make_docs(2000)]
    val = [t for t in texts if is_val(t, 0.1)]
    assert 140 < len(val) < 260  # ~10%
    assert all(is_val(t, 0.1) == is_val(str(t), 0.1) for t in texts[:50])
    assert not any(is_val(t, 0.0) for t in texts)
    assert doc_hash("a") != doc_hash("b")
    assert set(val) <= {t for t in texts if is_val(t, 0.2)}  # nested as the fraction grows
