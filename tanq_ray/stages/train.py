"""Stages ``train-<model>``: one translator (TANQ or CycleGAN) trained with Ray Train on the ingest shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import ray

from tanq_ray import stage_keys
from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config
from tanq_ray.models.config import TRANSLATOR_NAMES
from tanq_ray.run_ref import RunRef
from tanq_ray.runner import Inputs, Stage, StageContext
from tanq_ray.train.export import GENERATOR_FILE
from tanq_ray.train.launcher import launch_training, model_tags, translator_params
from tanq_ray.tune.scoring import score_translator
from tanq_ray.tune.sweep import concurrent_trials


@dataclass(frozen=True)
class TrainedTranslator:
    """A ``train-<model>`` stage's outputs: the exported generator and the last epoch's metrics."""

    generator: Path
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"generator": str(self.generator), "metrics": self.metrics}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "TrainedTranslator":
        return cls(Path(values["generator"]), dict(values.get("metrics", {})))


def model_config(config: Config, model: str) -> Config:
    """``config`` with ``train.model`` set to ``model``."""
    return config.model_copy(update={"train": config.train.model_copy(update={"model": model})})


def translator_work_dirs(config: Config, model: str) -> list[Path]:
    """Where a translator's training writes: Ray Train's storage (checkpoints) and the exported generator."""
    return [config.stage_dir("train") / "ray" / model, config.stage_dir("train") / model]


def translator_paths(config: Config) -> dict[str, Path]:
    """Where training exports each translator's generator."""
    return {model: config.stage_dir("train") / model / GENERATOR_FILE for model in TRANSLATOR_NAMES}


def translation_scores(config: Config, generator: Path) -> dict[str, float]:
    """The quality metrics every translator run logs, as sweep trials do (structure score; see tanq_ray.tune.scoring)."""
    return score_translator(Path(generator), config.stage_dir("ingest"), config.sweep.score_slices)


@ray.remote(num_cpus=0)
def _train_remote(config_tree: dict[str, Any], run: RunRef) -> TrainedTranslator:
    """Drive one ``TorchTrainer`` from a task: its workers hold the resources, and translators can train at once."""
    result = launch_training(Config.model_validate(config_tree), run)
    return TrainedTranslator(result.generator, {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))})


def train_translator(config: Config, context: StageContext) -> TrainedTranslator:
    """Train ``train.model`` on the ingest shards; its MLflow run gets per-epoch metrics, the generator and its scores."""
    name = config.train.model
    tags, params = model_tags(config), translator_params(config)
    with context.tracker.stage("train", context.parent, tags=tags, name=f"train-{name}", params=params) as run:
        ensure_ray(config)
        trained = ray.get(_train_remote.remote(config.model_dump(mode="json"), RunRef.of(run, context.tracker.uri)))
        run.log_artifact(trained.generator, "model")
        run.log_metrics(translation_scores(config, trained.generator))
    return trained


def _share(config: Config, resources: Mapping[str, float]) -> float:
    """Both translators at once when the cluster holds both worker groups (as sweep trials are packed)."""
    return 1.0 / concurrent_trials(config, resources, len(TRANSLATOR_NAMES))


def train_stage(model: str) -> Stage:
    """Stage ``train-<model>``: reads the shards (needs ``ingest``), the model's settings and ``train.*``."""
    return Stage(
        name=f"train-{model}",
        outputs=TrainedTranslator,
        run=lambda context, inputs: train_translator(model_config(context.config, model), context),
        needs=("ingest",),
        reads=lambda config, inputs: stage_keys.translator_inputs(config, model),
        work_dirs=lambda config: translator_work_dirs(config, model),
        share=_share,
        made_by=f"tanq train model={model}",
    )


TRAIN_STAGES = [train_stage(model) for model in TRANSLATOR_NAMES]


def trained_generators(inputs: Inputs) -> dict[str, Path]:
    """View name -> generator, from the outputs of the ``train-<model>`` stages among ``inputs``."""
    return {model: inputs[f"train-{model}"].generator for model in TRANSLATOR_NAMES if f"train-{model}" in inputs}
