"""The keys of the stages that single commands also run: a hash of what changes their results.

A key hashes the result-changing settings a stage reads
(:mod:`tanq_ray.setting_kinds`), the contents of its input folders and the
keys of the stages before it. ``tanq ingest``, ``tanq train`` and the
pipeline compute them here, so a stage finished by one command is found
finished by the others (:mod:`tanq_ray.stage_records`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tanq_ray.config import Config
from tanq_ray.setting_kinds import folder_fingerprint, result_settings


def stage_key(parts: dict[str, Any]) -> str:
    """A short, stable hash of a stage's inputs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def section(config: Config, name: str) -> dict[str, Any]:
    """The result-changing settings of one config section, without the section prefix."""
    return {key.split(".", 1)[1]: value for key, value in result_settings(config, name).items()}


def ingest_key(config: Config) -> str:
    """The cohort (the training folder's files, or the phantom's settings when there is none) and the slicing."""
    train_dir = config.data.train_dir
    cohort = {"train_dir": folder_fingerprint(train_dir)} if train_dir is not None else {"phantom": section(config, "phantom")}
    return stage_key({"cohort": cohort, "ingest": section(config, "ingest")})


def train_key(config: Config, model: str) -> str:
    """The shards, the model's own settings and the training loop's (``train.model`` is the model argument)."""
    return stage_key({"ingest": ingest_key(config), "model": config.models.model_dump(mode="json")[model], "train": section(config, "train")})
