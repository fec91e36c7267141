"""Stage ``ingest``: the data folders (a phantom cohort when none is configured) sliced into Parquet shards."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tanq_ray import console, progress_board, stage_keys
from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config
from tanq_ray.data.ingest import IngestResult, run_ingest
from tanq_ray.data.phantom import Cohort, generate_cohort
from tanq_ray.data.preview import sample_grid
from tanq_ray.runner import Inputs, Stage, StageContext
from tanq_ray.tracking import RunHandle, Tracker
from tanq_ray.visuals import save_png

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataFolders:
    """Where the training and evaluation volumes are, after the phantom fallback: the ``ingest`` stage's outputs."""

    train_dir: Path
    eval_dir: Path | None
    eval_labels_dir: Path | None
    train_hrT2_labels_dir: Path | None = None

    def to_json(self) -> dict[str, str | None]:
        return {name: None if path is None else str(path) for name, path in vars(self).items()}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "DataFolders":
        return cls(**{name: None if values.get(name) is None else Path(values[name]) for name in cls.__dataclass_fields__})


def phantom_stage(config: Config, tracker: Tracker, parent: RunHandle) -> Cohort:
    """Generate the phantom cohort (``phantom.*`` settings) under ``<output_dir>/phantom``."""
    settings = config.phantom
    with tracker.stage("phantom", parent, params=config.section_params("phantom")) as run:
        cohort = generate_cohort(
            config.stage_dir("phantom"),
            cases=settings.cases,
            eval_cases=settings.eval_cases,
            size=settings.size,
            seed=settings.seed,
            progress=lambda done, total, _: progress_board.post("phantom", f"{done}/{total} volumes"),
        )
        progress_board.clear("phantom")
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
        return DataFolders(data.train_dir, data.eval_dir, data.eval_labels_dir, data.train_hrT2_labels_dir)
    log.info("data.train_dir is unset: generating the phantom cohort under %s", config.stage_dir("phantom"))
    cohort = phantom_stage(config, tracker, parent)
    return DataFolders(cohort.train_dir, cohort.eval_dir, cohort.eval_labels_dir, cohort.train_labels_dir)


def ingest_stage(config: Config, tracker: Tracker, parent: RunHandle, folders: DataFolders | None = None) -> IngestResult:
    """NIfTI -> Parquet shards under ``<output_dir>/ingest`` (``folders``: default :func:`data_folders`); logs counts, timings and a sample grid."""
    ensure_ray(config)
    folders = folders or data_folders(config, tracker, parent)
    out_dir = config.stage_dir("ingest")
    with tracker.stage("ingest", parent, params=config.section_params("data", "ingest")) as run:
        result = run_ingest(folders.train_dir, out_dir, config.ingest, progress=console.active() is None)
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


def _ingest(context: StageContext, inputs: Inputs) -> DataFolders:
    folders = data_folders(context.config, context.tracker, context.parent)
    ingest_stage(context.config, context.tracker, context.parent, folders)
    return folders


INGEST = Stage(
    name="ingest",
    outputs=DataFolders,
    run=_ingest,
    reads=lambda config, inputs: stage_keys.ingest_inputs(config),
    made_by="tanq ingest",
)
"""Reads the cohort (the training folder's files, or the phantom's settings) and ``ingest.*``."""
