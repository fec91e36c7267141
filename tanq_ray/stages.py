"""Each stage of the recipe as a function of the config, recorded as a nested MLflow run.

The CLI runs one stage inside its own invocation run; the pipeline runs
several inside one. Stages talk to each other only through files under
``config.output_dir`` (see README, "Outputs").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config
from tanq_ray.data.ingest import IngestResult, run_ingest
from tanq_ray.data.phantom import Cohort, generate_cohort
from tanq_ray.data.preview import sample_grid
from tanq_ray.tracking import RunHandle, Tracker
from tanq_ray.train.launcher import TrainResult, launch_training, model_tags
from tanq_ray.visuals import save_png

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataFolders:
    """Where the training and evaluation volumes are, after the phantom fallback."""

    train_dir: Path
    eval_dir: Path | None
    eval_labels_dir: Path | None


def phantom_stage(config: Config, tracker: Tracker, parent: RunHandle) -> Cohort:
    """Generate the phantom cohort (``phantom.*`` settings) under ``<output_dir>/phantom``."""
    settings = config.phantom
    with tracker.stage("phantom", parent) as run:
        cohort = generate_cohort(
            config.stage_dir("phantom"), cases=settings.cases, eval_cases=settings.eval_cases, size=settings.size, seed=settings.seed, progress=True
        )
        run.log_metrics(
            {
                "cases_labelled": len(cohort.labelled_cases),
                "cases_unlabelled": len(cohort.unlabelled_cases),
                "cases_eval": len(cohort.eval_case_ids),
            }
        )
    return cohort


def data_folders(config: Config, tracker: Tracker, parent: RunHandle) -> DataFolders:
    """The configured data folders; with ``data.train_dir`` unset, a phantom cohort generated first."""
    data = config.data
    if data.train_dir is not None:
        return DataFolders(data.train_dir, data.eval_dir, data.eval_labels_dir)
    log.info("data.train_dir is unset: generating the phantom cohort under %s", config.stage_dir("phantom"))
    cohort = phantom_stage(config, tracker, parent)
    return DataFolders(cohort.train_dir, cohort.eval_dir, cohort.eval_labels_dir)


def ingest_stage(config: Config, tracker: Tracker, parent: RunHandle) -> IngestResult:
    """NIfTI -> Parquet shards under ``<output_dir>/ingest``; logs counts, timings and a sample grid."""
    folders = data_folders(config, tracker, parent)
    out_dir = config.stage_dir("ingest")
    with tracker.stage("ingest", parent) as run:
        ensure_ray(config)
        result = run_ingest(folders.train_dir, out_dir, config.ingest)
        counts = result.manifest.counts()
        run.log_metrics(
            counts
            | {
                "volumes_processed": result.processed,
                "volumes_reused": result.reused,
                "seconds": result.seconds,
                "volumes_per_second": result.processed / result.seconds,
                "slices_per_second": result.processed_slices / result.seconds,
            }
        )
        preview = save_png(sample_grid(result.manifest), out_dir / "sample_slices.png")
        run.log_artifact(preview)
        run.log_artifact(out_dir / "manifest.json")
    return result


def train_stage(config: Config, tracker: Tracker, parent: RunHandle) -> TrainResult:
    """Train ``train.model`` on the ingest shards with Ray Train; its MLflow run gets per-epoch metrics."""
    name = config.train.model
    with tracker.stage("train", parent, tags=model_tags(config), name=f"train-{name}") as run:
        ensure_ray(config)
        result = launch_training(config, run.run_id, tracker.uri)
        run.log_artifact(result.generator, "model")
    return result
