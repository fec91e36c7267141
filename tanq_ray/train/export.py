"""The trained translator as a standalone file: generator weights plus the config to rebuild it.

``generator.pt`` holds only tensors and plain data, so it loads with
``torch.load(..., weights_only=True)``: no pickled code runs on load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tanq_ray.io_utils import atomic_path
from tanq_ray.models.base import TranslatorModel
from tanq_ray.models.config import CONFIG_TYPES
from tanq_ray.models.registry import build_model

GENERATOR_FILE = "generator.pt"
FORMAT = 1


def export_generator(model: TranslatorModel, folder: Path, image_size: int | None = None) -> Path:
    """Write ``folder/generator.pt`` (atomically) and return its path; ``image_size``: the slices it was trained on."""
    payload = {
        "format": FORMAT,
        "model": model.name,
        "image_size": image_size,
        "config": model.config.model_dump(mode="json"),
        "generator": model.translator.state_dict(),
    }
    with atomic_path(folder / GENERATOR_FILE) as tmp:
        torch.save(payload, tmp)
    return folder / GENERATOR_FILE


def load_translator(path: str | Path, device: str | torch.device = "cpu") -> TranslatorModel:
    """A model whose ``translate`` uses the exported generator (its other networks stay untrained)."""
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != FORMAT or payload.get("model") not in CONFIG_TYPES:
        raise ValueError(f"'{path}' is not a tanq-ray generator export (format {FORMAT}, model tanq or cyclegan)")
    config = CONFIG_TYPES[payload["model"]].model_validate(payload["config"])
    model = build_model(payload["model"], config, device)
    model.translator.load_state_dict(payload["generator"])
    return model
