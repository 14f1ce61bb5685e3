"""leviathan.models: the Dense, Leviathan and factorized language models, configs, accounting.

    from leviathan.models import build_model, count_params, flops_per_token, \
        resolve_model_config, isoparametric_depth
"""

from leviathan.models.accounting import (
    ParamCounts,
    count_params,
    factorized_rank,
    flops_per_token,
    isoparametric_depth,
    resolve_model_config,
)
from leviathan.models.build import build_model
from leviathan.models.config import (
    ConfigError,
    LevConfig,
    ModelConfig,
    check_tokenizer_vocab,
    to_model_config,
)
from leviathan.models.factorized import FactorizedEmbedding
from leviathan.models.ladder import ladder_sizes
from leviathan.models.lev import LevGenerator
from leviathan.models.transformer import LanguageModel

__all__ = [
    "ConfigError",
    "FactorizedEmbedding",
    "LanguageModel",
    "LevConfig",
    "LevGenerator",
    "ModelConfig",
    "ParamCounts",
    "build_model",
    "check_tokenizer_vocab",
    "count_params",
    "factorized_rank",
    "flops_per_token",
    "isoparametric_depth",
    "ladder_sizes",
    "resolve_model_config",
    "to_model_config",
]
