"""Translator registry: ``build_model("tanq" | "cyclegan", config, device)``."""

from __future__ import annotations

import torch

from tanq_ray.models.base import TranslatorModel
from tanq_ray.models.config import CycleGANConfig, TanqConfig
from tanq_ray.models.cyclegan import CycleGANModel
from tanq_ray.models.tanq import TanqModel

MODELS: dict[str, type[TranslatorModel]] = {"tanq": TanqModel, "cyclegan": CycleGANModel}
CONFIGS: dict[str, type[TanqConfig] | type[CycleGANConfig]] = {"tanq": TanqConfig, "cyclegan": CycleGANConfig}


def build_model(
    name: str, config: TanqConfig | CycleGANConfig | None = None, device: str | torch.device = "cpu"
) -> TranslatorModel:
    """A fresh translator of registry ``name`` (``None`` config = that model's defaults)."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}': choose one of {sorted(MODELS)}")
    config = CONFIGS[name]() if config is None else config
    if not isinstance(config, CONFIGS[name]):
        raise TypeError(f"model '{name}' needs a {CONFIGS[name].__name__}, got {type(config).__name__}")
    return MODELS[name](config, device)
