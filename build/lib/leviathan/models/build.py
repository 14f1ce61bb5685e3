"""build_model(cfg): the network for a model config (DictConfig, dict or ModelConfig)."""

from __future__ import annotations

from typing import Any

import torch

from leviathan.models.accounting import resolve_model_config
from leviathan.models.transformer import LanguageModel


def build_model(cfg: Any, *, device: str | torch.device | None = None) -> LanguageModel:
    """Resolve and validate cfg (isoparametric depth included), then build the LanguageModel.

    device="meta" builds it without allocating memory (for counting the largest sizes).
    """
    resolved = resolve_model_config(cfg)
    if device is None:
        return LanguageModel(resolved)
    with torch.device(device):
        return LanguageModel(resolved)
