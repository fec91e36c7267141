"""Launch a translator's Ray Train run from the config: datasets, scaling, storage, failures, export.

Runs live under ``<output_dir>/train/``: Ray Train's run folder ``ray/<model>/``
(checkpoints, the storage path) and the exported ``<model>/generator.pt``.
Running again with the same output folder continues from the latest
checkpoint, so a finished run trains on when ``models.<model>.epochs`` grows.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tanq_ray.config import Config
from tanq_ray.run_ref import RunRef
from tanq_ray.data.readers import read_domain
from tanq_ray.data.shards import Manifest
from tanq_ray.io_utils import atomic_path
from tanq_ray.train.export import GENERATOR_FILE
from tanq_ray.train.loop import train_loop_per_worker


class TrainingSetupError(ValueError):
    """The training request cannot run on this cluster or data; raised before any worker starts."""


@dataclass(frozen=True)
class TrainResult:
    """Where the exported generator is, and the last epoch's metrics."""

    generator: Path
    metrics: dict[str, Any]


def model_tags(config: Config) -> dict[str, str]:
    """The MLflow tags that identify the configuration of ``train.model`` (same names for every model)."""
    from tanq_ray.models.registry import model_tags as tags_of

    name = config.train.model
    return tags_of(name, getattr(config.models, name))


def translator_params(config: Config) -> dict[str, Any]:
    """The settings a translator's training reads (its run's params): the slices, the training loop, its model section."""
    return config.section_params("ingest", "train", f"models.{config.train.model}")


def check_resources(config: Config) -> None:
    """Refuse a worker group the cluster can never hold (it would wait forever)."""
    import ray

    train = config.train
    total = ray.cluster_resources()
    wanted = {"CPU": train.num_workers * train.cpus_per_worker}
    if train.use_gpu:
        wanted["GPU"] = float(train.num_workers)
    for resource, amount in wanted.items():
        if amount > total.get(resource, 0.0):
            raise TrainingSetupError(
                f"train.num_workers={train.num_workers} needs {amount:g} {resource} "
                f"but the cluster has {total.get(resource, 0.0):g}; lower train.num_workers"
                + (" or train.cpus_per_worker" if resource == "CPU" else " or set train.use_gpu=false")
            )


def launch_training(
    config: Config,
    run: RunRef | None,
    *,
    run_dir: Path | None = None,
    callbacks: Sequence[Any] = (),
    log_name: str | None = None,
) -> TrainResult:
    """Train ``config.train.model`` on the ingest shards with a ``TorchTrainer``; export its generator.

    ``run_dir`` (default ``<output_dir>/train``) holds Ray Train's storage and
    the export; a sweep gives each trial its own. ``callbacks`` are Ray Train
    callbacks (a sweep passes Tune's report callback). Rank 0 logs each epoch to
    ``run`` (none: no tracking). ``log_name`` names the workers' log file and
    progress line (default ``train-<model>``; a sweep names each trial's).
    """
    from ray.data import DataContext
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    DataContext.get_current().enable_progress_bars = False  # per-epoch bars of every split drown the epoch lines
    name = config.train.model
    run_dir = run_dir or config.stage_dir("train")
    manifest = Manifest.read(config.stage_dir("ingest"))
    check_resources(config)
    datasets = {
        "source": read_domain(manifest, "ceT1", shuffle_files=True).randomize_block_order(),
        "target": read_domain(manifest, "hrT2", shuffle_files=True).randomize_block_order(),
    }
    train = config.train
    resources = {"CPU": train.cpus_per_worker} | ({"GPU": 1.0} if train.use_gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "image_size": int(manifest.settings["image_size"]),
            "run": run,
            "log_name": log_name or f"train-{name}",
        },
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=str((run_dir / "ray").resolve()),
            failure_config=FailureConfig(max_failures=train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training '{name}' finished without a checkpoint under {run_dir}")
    destination = run_dir / name / GENERATOR_FILE
    with result.checkpoint.as_directory() as folder, atomic_path(destination) as tmp:
        shutil.copyfile(Path(folder) / GENERATOR_FILE, tmp)
    return TrainResult(destination, dict(result.metrics or {}))
