"""The demo corpus and the conf/data configs: Pile format, several sources, deterministic; every
config composes into a valid DataConfig and the demo/debug ones build and stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO

from leviathan.data import build_train_stream, build_val_batches, check_data, to_data_config
from leviathan.data.minipile import cached_minipile
from leviathan.data.reading import SkipStats, iter_docs, resolve_shards

CONF = REPO / "conf" / "data"


def _records(root):
    import zstandard

    out = []
    for p in sorted(Path(root).glob("*.jsonl.zst")):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes())
        out += [json.loads(x) for x in data.decode().splitlines()]
    return out


def test_cli_writes_a_multisource_pile_corpus(tmp_path):
    r = subprocess.run([sys.executable, "-m", "leviathan.data.minipile", str(tmp_path / "a"),
                        "--mb", "0.4"], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    recs = _records(tmp_path / "a")
    sources = {x["meta"]["pile_set_name"] for x in recs}
    assert sources == {"Github", "Docstrings", "Pydoc Topics", "DM Mathematics"}
    assert all(isinstance(x["text"], str) and x["text"].strip() for x in recs)
    size = sum(len(x["text"].encode()) for x in recs)
    assert 0.3e6 < size < 0.7e6
    assert any("def " in x["text"] for x in recs if x["meta"]["pile_set_name"] == "Github")
    assert len(resolve_shards(tmp_path / "a")) == 4  # manifest.json is not a shard
    stats = SkipStats()
    assert sum(1 for p in resolve_shards(tmp_path / "a") for _ in iter_docs(p, stats)) == \
        len(recs) and stats.skipped == 0
    # deterministic: a second write is byte-identical
    subprocess.run([sys.executable, "-m", "leviathan.data.minipile", str(tmp_path / "b"),
                    "--mb", "0.4"], check=True, capture_output=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    for p in sorted((tmp_path / "a").iterdir()):
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes(), p.name


def test_cached_minipile_reuses_and_rebuilds(tmp_path):
    root = cached_minipile(tmp_path / "m", mb=0.1)
    shard = root / "minipile-00.jsonl.zst"
    t = shard.stat().st_mtime_ns
    assert cached_minipile(tmp_path / "m", mb=0.1) == root and shard.stat().st_mtime_ns == t
    cached_minipile(tmp_path / "m", mb=0.15)
    assert json.loads((root / "manifest.json").read_text())["mb"] == 0.15


def _compose(name: str, data_dir: Path):
    from leviathan.config import compose

    return to_data_config(compose("train", [f"data={name}", f"paths.data_dir={data_dir}"]))


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_every_data_config_is_valid(name, tmp_path):
    cfg = _compose(name, tmp_path)
    assert cfg.tokenizer == "o200k_base"
    assert str(tmp_path) in cfg.path  # every path comes from paths.data_dir


def test_pile_config_is_the_paper_setting(tmp_path):
    cfg = _compose("pile", tmp_path)
    assert (cfg.mode, cfg.seq_len, cfg.shuffle_buffer) == ("stream", 512, 10_000)
    from leviathan.data import DataError

    with pytest.raises(DataError, match=rf"data\.path: '{tmp_path}/pile/train'"):
        check_data(cfg)  # no Pile here: fails before training, naming the path


def test_debug_config_builds_and_streams(tmp_path):
    cfg = _compose("debug", tmp_path)
    check_data(cfg)
    s = build_train_stream(cfg, batch_size=4)
    b = next(iter(s))
    assert b.shape == (4, cfg.seq_len + 1) and b.dtype == torch.int64
    assert (tmp_path / "minipile-debug-o200k_base" / "index.json").is_file()
    val = build_val_batches(cfg, batch_size=16)
    assert sum(len(v) for v in val) == cfg.val_tokens // (cfg.seq_len + 1)


@pytest.mark.slow
def test_minipile_demo_config_builds(tmp_path):
    cfg = _compose("minipile", tmp_path)
    assert cfg.mode == "prepared" and cfg.seq_len == 512
    s = build_train_stream(cfg, batch_size=8)
    assert next(iter(s)).shape == (8, 513)
    index = json.loads((Path(cfg.prepared_dir) / "index.json").read_text())
    assert 0.6e6 < index["train_tokens"] < 2e6 and len(index["sources"]) == 4
    assert sum(len(v) for v in build_val_batches(cfg, batch_size=32)) == 32768 // 513


def test_composed_dense_and_leviathan_runs_get_identical_batches(tmp_path):
    """The real conf/train.yaml, composed for a Dense and a Leviathan run: same data stream."""
    from leviathan.config import compose
    from leviathan.data import fingerprint

    runs = [compose("train", [f"model.arm={arm}", "data=debug", f"paths.data_dir={tmp_path}"])
            for arm in ("dense", "leviathan")]
    assert runs[0].model.arm == "dense" and runs[1].model.arm == "leviathan"
    assert runs[0].data == runs[1].data
    a, b = (build_train_stream(r.data, batch_size=4) for r in runs)
    for x, y, _ in zip(a, b, range(5), strict=False):
        assert torch.equal(x, y)
    assert fingerprint(runs[0].data, batch_size=4) == fingerprint(runs[1].data, batch_size=4)
