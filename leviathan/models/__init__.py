"""leviathan.models: the Dense, Leviathan and factorized language models, configs, accounting.

    from leviathan.models import build_model, count_params, flops_per_token, \
        resolve_model_config, isoparametric_depth

Exports load lazily (PEP 562), so composing a config (leviathan.models.config) or counting
parameters (leviathan.models.accounting) does not import torch; the modules (build,
transformer, lev, factorized) import it when a model class or build_model is first used.
"""

from leviathan.lazy import lazy_exports

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
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
