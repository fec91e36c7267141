"""One sweep trial as a Ray Tune function trainable: train with a ``TorchTrainer``, score, report.

``run_trial(params)`` gets the base config, the trial spec and where to log
(see :func:`tanq_ray.tune.sweep.run_sweep`). Its folder
``<sweep dir>/trials/<trial name>/`` holds Ray Train's storage (so a re-run
continues from the last checkpoint), the exported generator and
``trial.json`` (MLflow run id, attempts, final metrics). Its MLflow run is a
child of the sweep run, reopened rather than duplicated when the trial runs
again after an interruption. A trial whose ``trial.json`` already holds final
metrics reports them again without training: Tune saves its experiment
state every few seconds, so a sweep killed just after a trial finished may
schedule it once more on resume.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from tanq_ray.config import Config
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.tracking import RunHandle, Tracker
from tanq_ray.train.launcher import launch_training, model_tags, translator_params
from tanq_ray.run_ref import RunRef
from tanq_ray.tune.downstream import downstream_scores_outside_trial
from tanq_ray.tune.scoring import score_translator
from tanq_ray.tune.space import TrialSpec, trial_config

TRIAL_FILE = "trial.json"


def trial_dir(sweep_dir: Path, trial: TrialSpec) -> Path:
    return sweep_dir / "trials" / trial.name


def read_trial_record(folder: Path) -> dict[str, Any]:
    """``trial.json`` of a trial folder, or an empty record when the trial never started."""
    path = folder / TRIAL_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    write_text_atomic(folder / TRIAL_FILE, json.dumps(record, indent=1))


def trial_tags(config: Config, trial: TrialSpec, sweep_name: str) -> dict[str, str]:
    """MLflow tags of a trial run: the translator tags plus ``row``, ``trial`` and ``sweep``."""
    return model_tags(config) | {"row": trial.row, "trial": trial.name, "sweep": sweep_name}


def run_trial(params: dict[str, Any]) -> None:
    """Ray Tune function trainable.

    ``params``: ``base`` (config), ``trial`` (spec), ``sweep_dir``, ``sweep_run_id``
    and ``reference_contrast`` (labelled real hrT2's VS / cochlea contrast, or
    None: no contrast gaps).
    """
    base = Config.model_validate(params["base"])
    trial = TrialSpec.from_dict(params["trial"])
    config = trial_config(base, trial)
    folder = trial_dir(Path(params["sweep_dir"]), trial)
    record = read_trial_record(folder)
    if "metrics" in record:  # finished before an interruption that Tune's saved state had not caught up with
        ray.tune.report(record["metrics"] | {"done": True})
        return
    record.update(name=trial.name, row=trial.row, overrides=trial.overrides, attempts=record.get("attempts", 0) + 1)
    started = time.time()
    record["started_at"] = started
    tracker = Tracker(config)
    parent = RunHandle(tracker.client, params["sweep_run_id"], tracker.experiment_id)
    tags = trial_tags(config, trial, base.sweep.name)
    logged = translator_params(config) | (config.section_params("segment") if base.sweep.downstream else {})
    with tracker.stage("trial", parent, tags=tags, name=trial.name, resume_run_id=record.get("run_id"), params=logged) as run:
        record["run_id"] = run.run_id
        _write_record(folder, record)
        result = launch_training(
            config, RunRef.of(run, tracker.uri), run_dir=folder, callbacks=[TuneReportCallback()], log_name=f"trial-{trial.name}"
        )
        train_seconds = time.time() - started
        scores = score_translator(
            result.generator, config.stage_dir("ingest"), base.sweep.score_slices, params.get("reference_contrast")
        )
        if base.sweep.downstream:
            logging_to = RunRef.of(run, tracker.uri)
            scores |= downstream_scores_outside_trial(config, trial.model, result.generator, folder / "downstream", logging_to)
        final = {key: float(value) for key, value in result.metrics.items() if key.startswith("loss_")} | scores | {
            "epochs": float(getattr(config.models, trial.model).epochs),
            "train_seconds": train_seconds,
            "trial_seconds": time.time() - started,
            "attempts": float(record["attempts"]),
        }
        run.log_metrics({key: value for key, value in final.items() if not key.startswith("loss_")})  # losses: per epoch already
        run.log_artifact(result.generator, "model")
    record.update(metrics=final, finished_at=time.time())
    _write_record(folder, record)
    ray.tune.report(final | {"done": True})
