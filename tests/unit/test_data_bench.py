"""`python -m leviathan.bench data` runs end to end and ends with the JSON line of the contract."""

from __future__ import annotations

import json

from leviathan.bench.__main__ import main as bench_main


def test_data_bench_prints_three_rates(capsys, tmp_path):
    from helpers.corpora import write_corpus

    write_corpus(tmp_path, n_docs=300, n_shards=3)
    rc = bench_main(["data", "--path", str(tmp_path), "--threads", "2", "--seq-len", "128",
                     "--batch-size", "32", "--shuffle-buffer", "16", "--repeats", "1",
                     "--seconds", "0.3", "--epochs", "1"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("raw tiktoken encode_ordinary_batch") for line in lines)
    result = json.loads(lines[-1])
    for key in ("raw_tokens_per_s", "stream_tokens_per_s", "prepared_tokens_per_s"):
        assert result[key] > 0, key
    assert result["threads"] == 2 and result["documents"] == 300
    # the prepared reader only gathers memory: it must beat tokenizing by a wide margin
    assert result["prepared_tokens_per_s"] > 10 * result["raw_tokens_per_s"]
