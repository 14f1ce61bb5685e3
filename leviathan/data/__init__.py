"""Pile-format data: reading, o200k_base tokenization, streaming and prepared training streams.

Public API (leviathan/data/api.py): check_data, build_train_stream, build_val_batches,
token_frequencies, fingerprint; DataConfig and DataError (config.py). Exports load lazily, so
`python -m leviathan.data.<tool>` starts without importing the rest.
"""

from leviathan.lazy import lazy_exports

_EXPORTS = {
    "build_train_stream": "api", "build_val_batches": "api", "check_data": "api",
    "ensure_data": "api", "fingerprint": "api", "val_windows": "api",
    "token_frequencies": "frequencies",
    "DataConfig": "config", "DataError": "config",
    "to_data_config": "config",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
