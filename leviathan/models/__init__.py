"""leviathan.models: the Dense, Leviathan and factorized language models, configs, accounting.

    from leviathan.models import build_model, count_params, flops_per_token, \
        resolve_model_config, isoparametric_depth

Exports load lazily (PEP 562), so composing a config (leviathan.models.config) or counting
parameters (leviathan.models.accounting) does not import torch; the modules (build,
transformer, lev, factorized) import it when a model class or build_model is first used.
"""

import importlib

_EXPORTS = {
    "ParamCounts": "accounting", "count_params": "accounting", "factorized_rank": "accounting",
    "flops_per_token": "accounting", "isoparametric_depth": "accounting",
    "resolve_model_config": "accounting",
    "build_model": "build",
    "ConfigError": "config", "LevConfig": "config", "ModelConfig": "config",
    "check_tokenizer_vocab": "config", "to_model_config": "config",
    "FactorizedEmbedding": "factorized",
    "ladder_sizes": "ladder",
    "LevGenerator": "lev",
    "LanguageModel": "transformer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"leviathan.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'leviathan.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
