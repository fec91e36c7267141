"""Translator registry: the model class of each translator name, ``build_model(name, config, device)``.

Names and config classes come from :class:`~tanq_ray.models.config.ModelsConfig`; this adds the classes.
"""

from __future__ import annotations

import torch

from tanq_ray.models.base import TranslatorModel
from tanq_ray.models.config import CONFIG_TYPES as CONFIGS
from tanq_ray.models.config import TRANSLATOR_NAMES, CycleGANConfig, TanqConfig
from tanq_ray.models.cyclegan import CycleGANModel
from tanq_ray.models.tanq import TanqModel

MODELS: dict[str, type[TranslatorModel]] = {model.name: model for model in (TanqModel, CycleGANModel)}
assert tuple(MODELS) == TRANSLATOR_NAMES, "every translator of ModelsConfig needs its model class here, in the same order"


def model_tags(name: str, config: TanqConfig | CycleGANConfig) -> dict[str, str]:
    """The MLflow tags that identify a translator configuration (same names for every model)."""
    return {"model": name} | MODELS[name].describe(config)


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
