"""The `data` config group: a typed DataConfig, registered in Hydra's ConfigStore, validated.

Every error names the config key (``data.<field>``) or the path it refers to.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.typed_config import (
    above,
    at_least,
    check_fields,
    choice,
    in_range,
    optional,
    positive,
)

MODES = ("stream", "prepared")
CORPORA = ("minipile",)


class DataError(LeviathanError, ValueError):
    """Bad data config, a path matching no files, or a prepared dataset that does not fit."""


@dataclass
class DataConfig:
    path: str | None = None  # file, directory or glob of Pile-format shards (.jsonl/.zst/.gz)
    mode: str = "stream"  # "stream" (tokenize on the fly) | "prepared" (read uint32 memmaps)
    prepared_dir: str | None = None  # output of `python -m leviathan.data.prepare` (mode=prepared)
    auto_prepare: bool = False  # mode=prepared: build prepared_dir from path when it is missing
    build_corpus: str | None = None  # "minipile": write the demo corpus at path if it has no files
    tokenizer: str = "o200k_base"  # tiktoken encoding name
    seq_len: int = 512  # tokens per training example; windows hold seq_len + 1 tokens
    shuffle_buffer: int = 10_000  # stream mode: windows held in the seeded shuffle buffer
    seed: int = 0  # seeds the shard order, shuffle buffer and window permutation
    val_fraction: float = 0.01  # share of documents (by content hash) held out for validation
    val_tokens: int = 524_288  # size of the fixed validation token set (whole windows)
    num_threads: int = 0  # tiktoken encoding threads (0: all CPU cores available to us)
    num_workers: int = 0  # stream mode: reader/encoder processes per rank (0: threads in this
    #                       process); the merge order depends on it, so it is part of the stream
    encode_batch_docs: int = 256  # documents per encode_ordinary_batch call
    minipile_mb: float = 4.0  # build_corpus=minipile: approximate corpus size in MB
    freq_tokens: int = 50_000_000  # stream mode: training-token frequencies (rare-token buckets)
    #   are counted over this prefix of the training stream; 0: no rare-token metric
    freq_cache_dir: str | None = None  # stream mode: where those counts are cached (by data
    #   config and stream fingerprint); null: counted by every run
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes, ignored by the code

    def __post_init__(self) -> None:
        self.validate()

    _checks = {
        "mode": choice(*MODES), "build_corpus": optional(choice(*CORPORA)),
        "seq_len": positive(), "shuffle_buffer": positive(), "seed": at_least(0),
        "val_fraction": in_range(0, 1, hi_open=True), "val_tokens": at_least(0),
        "num_threads": at_least(0), "num_workers": at_least(0), "encode_batch_docs": positive(),
        "minipile_mb": above(0), "freq_tokens": at_least(0),
    }

    def validate(self) -> DataConfig:
        def bad(key: str, msg: str) -> DataError:
            return DataError(f"data.{key}: {msg}")

        check_fields(self, "data", DataError)
        if self.mode == "stream" and not self.path:
            raise bad("path", "is required in stream mode (a file, directory or glob of shards)")
        if self.mode == "prepared" and not self.prepared_dir:
            raise bad("prepared_dir", "is required in prepared mode")
        if self.mode == "prepared" and self.auto_prepare and not self.path:
            raise bad("path", "is required when data.auto_prepare=true (the shards to prepare)")
        if self.build_corpus is not None and not self.path:
            raise bad("path", "is required when data.build_corpus is set (where to write it)")
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise bad("tokenizer", f"must be a tiktoken encoding name, got {self.tokenizer!r}")
        return self

    @property
    def threads(self) -> int:  # resolved number of encoding threads
        if self.num_threads:
            return self.num_threads
        try:
            return max(1, len(os.sched_getaffinity(0)))  # what SLURM/cgroups give us
        except AttributeError:  # pragma: no cover - not on Linux
            return max(1, os.cpu_count() or 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def n_val_windows(cfg: DataConfig) -> int:
    """Validation windows: data.val_tokens in whole windows (at least one unless it is 0)."""
    return 0 if cfg.val_tokens == 0 else max(1, cfg.val_tokens // (cfg.seq_len + 1))


def to_data_config(cfg: Any) -> DataConfig:
    """DataConfig from a DataConfig, a dict or an OmegaConf node (a whole run config's `data`
    node is accepted too); unknown keys are errors that name them."""
    from leviathan.typed_config import to_config

    if not isinstance(cfg, DataConfig) and hasattr(cfg, "keys") and "data" in cfg \
            and "mode" not in cfg:
        cfg = cfg["data"]  # a whole run config
    return to_config(DataConfig, cfg, "data", DataError)
