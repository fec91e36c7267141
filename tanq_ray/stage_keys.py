"""What changes a stage's result, and the hash that keys it.

A key hashes the result-changing settings a stage reads
(:mod:`tanq_ray.setting_kinds`), the contents of its input folders and the
keys of the stages before it (:class:`tanq_ray.runner.Runner` combines
them). The parts that more than one place needs live here: the ingest and
translator stages' inputs, and the study's translator keys, which it files
its trained translators under.
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


def ingest_inputs(config: Config) -> dict[str, Any]:
    """The cohort (the training folder's files, or the phantom's settings when there is none) and the slicing."""
    train_dir = config.data.train_dir
    cohort = {"train_dir": folder_fingerprint(train_dir)} if train_dir is not None else {"phantom": section(config, "phantom")}
    return {"cohort": cohort, "ingest": section(config, "ingest")}


def translator_inputs(config: Config, model: str) -> dict[str, Any]:
    """Beyond the shards: the model's own settings and the training loop's (``train.model`` is the model argument)."""
    return {"model": config.models.model_dump(mode="json")[model], "train": section(config, "train")}


def ingest_key(config: Config) -> str:
    return stage_key(ingest_inputs(config))


def train_key(config: Config, model: str) -> str:
    """What a trained translator depends on: the shards and :func:`translator_inputs`."""
    return stage_key({"ingest": ingest_key(config)} | translator_inputs(config, model))
