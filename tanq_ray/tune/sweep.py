"""``tanq sweep``: a Ray Tune sweep over translator configurations, resumable, tracked in MLflow.

Layout under ``<output_dir>/sweep/<sweep.name>/``: ``sweep.json`` (trial list
fingerprint, MLflow run id), ``tune/`` (Tune's experiment state),
``trials/<trial>/`` (one per trial, see :mod:`tanq_ray.tune.trial`) and
``results.md`` / ``results.csv`` (trials x metrics, best first).

Running the same sweep again resumes it: Tune restores its experiment, trials
that finished are not run again, interrupted ones continue from their last
Ray Train checkpoint, and the sweep's MLflow run is reopened, so each trial
keeps exactly one child run. A sweep whose trials or training settings
changed is refused (choose a new ``sweep.name``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from tanq_ray import console
from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config, ConfigError
from tanq_ray.data.shards import Manifest
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.tables import Table
from tanq_ray.tracking import RunHandle, Tracker
from tanq_ray.train.launcher import check_resources, model_tags
from tanq_ray.evaluate.contrast import mean_contrasts, read_volumes
from tanq_ray.self_training import hrT2_rois
from tanq_ray.tune.downstream import DOWNSTREAM_METRICS, evaluation_folders
from tanq_ray.tune.space import TrialSpec, plan_trials, trial_config
from tanq_ray.tune.trial import read_trial_record, run_trial, trial_dir

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
DATA_CPU = 0.5  # CPU left per trial for its Ray Data read tasks
TRIAL_CPU = 0.01  # the trial function only waits for its TorchTrainer, which reserves the real resources (Tune refuses 0)


class SweepFailedError(RuntimeError):
    """Some trials failed; the table of the others was still written."""


@dataclass(frozen=True)
class SweepResult:
    """The sweep's table and timing."""

    folder: Path
    table: Table
    markdown: Path
    csv: Path
    best_trial: str | None
    concurrency: int
    wall_seconds: float
    trial_seconds: float  # sum over the trials run by this invocation


LOWER_IS_BETTER = frozenset({"vs_contrast_gap", "cochlea_contrast_gap"})
CONTRAST_GAPS = ("vs_contrast_gap", "cochlea_contrast_gap")


def rank_metric(config: Config) -> str:
    """``sweep.rank_by``; unset: downstream mean Dice when the sweep computes it, else the structure score."""
    if config.sweep.rank_by is not None:
        return config.sweep.rank_by
    return "dice_mean" if config.sweep.downstream else "structure_score"


def rank_order(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """``rows`` best first by ``metric`` (lowest first for a contrast gap); rows without it (or NaN) last."""

    def badness(row: dict[str, Any]) -> float:
        value = row.get(metric)
        if value is None or math.isnan(value):
            return math.inf
        return value if metric in LOWER_IS_BETTER else -value

    return sorted(rows, key=badness)


def reference_contrast(config: Config) -> dict[str, float] | None:
    """VS / cochlea contrast of the labelled evaluation hrT2 (their ROI volumes), what trials' contrast gaps compare to; None without labels."""
    folders = evaluation_folders(config)
    if folders is None:
        if config.sweep.rank_by in LOWER_IS_BETTER:
            raise ConfigError(
                f"sweep.rank_by '{config.sweep.rank_by}' compares translations with labelled real hrT2: "
                "set data.eval_dir and data.eval_labels_dir"
            )
        return None
    eval_dir, labels_dir = folders
    rois = hrT2_rois(config, "eval_truth", eval_dir, labels_dir)
    return mean_contrasts(read_volumes((roi.image, roi.label) for roi in rois if roi.label is not None))


def sweep_dir(config: Config) -> Path:
    return config.stage_dir("sweep") / config.sweep.name


def concurrent_trials(config: Config, resources: Mapping[str, float], n_trials: int) -> int:
    """Trials at once: ``sweep.max_concurrent_trials``, else what the cluster holds (workers + ``DATA_CPU`` each)."""
    if config.sweep.max_concurrent_trials is not None:
        return min(config.sweep.max_concurrent_trials, n_trials)
    train = config.train
    slots = math.floor(resources.get("CPU", 0.0) / (train.num_workers * train.cpus_per_worker + DATA_CPU))
    if train.use_gpu:
        slots = min(slots, math.floor(resources.get("GPU", 0.0) / train.num_workers))
    return max(1, min(slots, n_trials))


def _fingerprint(config: Config, trials: list[TrialSpec]) -> str:
    """What a resumed sweep must share with the original: the trials and the settings they train with."""
    tree = config.model_dump(mode="json")
    settings = {key: tree[key] for key in ("output_dir", "data", "ingest", "models", "train")}
    scoring = {"slices": config.sweep.score_slices, "downstream": tree["segment"] if config.sweep.downstream else None}
    text = json.dumps({"trials": [t.to_dict() for t in trials], "settings": settings, "scoring": scoring}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_resumable(folder: Path, fingerprint: str) -> dict[str, Any]:
    path = folder / SWEEP_FILE
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"sweep '{folder.name}' in '{folder}' was started with other trials or training settings; "
            "set sweep.name to start a new sweep, or delete that folder"
        )
    return state


def _table(config: Config, trials: list[TrialSpec], folder: Path, errors: Mapping[str, str]) -> Table:
    """One row per trial from its ``trial.json``: row, tags, axis values, scores, generator loss, status; best first."""
    axes = list(dict.fromkeys(key for trial in trials for key in trial.overrides))
    rows: list[dict[str, Any]] = []
    for trial in trials:
        record = read_trial_record(trial_dir(folder, trial))
        metrics = record.get("metrics", {})
        status = "finished" if metrics else (f"error: {errors[trial.name]}" if trial.name in errors else "not finished")
        tags = model_tags(trial_config(config, trial))
        rows.append({"trial": trial.name, "row": trial.row} | tags | trial.overrides | metrics | {"status": status})
    downstream = list(DOWNSTREAM_METRICS) if config.sweep.downstream else []
    gaps = [gap for gap in CONTRAST_GAPS if any(gap in row for row in rows)]
    columns = [
        "trial", "row", "model", "norm", "segdecoder", "patch_select", *axes,
        *downstream, "structure_score", "structure_score_head", *gaps, "loss_G", "train_seconds", "attempts", "status",
    ]  # fmt: skip; every loss is in each trial's MLflow run
    return Table(columns, rank_order(rows, rank_metric(config)))


@contextmanager
def _tune_output_to_log() -> Iterator[None]:
    """Under a quiet console, Tune's own printed lines (where its results are, TensorBoard) go to ``logs/tune.log``."""
    terminal = console.active()
    if terminal is None or terminal.verbose:
        yield
        return
    with open(terminal.log_dir / "tune.log", "a") as log_file, redirect_stdout(log_file):
        yield


def _tuner(
    config: Config, trials: list[TrialSpec], folder: Path, run_id: str, concurrency: int, contrast: dict[str, float] | None
) -> Any:
    """A new Tuner over the trials, or the restored one of an interrupted sweep."""
    from ray import tune

    trainable = tune.with_resources(run_trial, {"CPU": TRIAL_CPU})
    tune_dir = folder / "tune"
    if tune.Tuner.can_restore(str(tune_dir)):
        log.info("resuming sweep '%s' from %s", config.sweep.name, tune_dir)
        return tune.Tuner.restore(str(tune_dir), trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={
            "base": config.model_dump(mode="json"),
            "trial": tune.grid_search([trial.to_dict() for trial in trials]),
            "sweep_dir": str(folder.resolve()),
            "sweep_run_id": run_id,
            "reference_contrast": contrast,
        },
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrency,
            trial_name_creator=lambda t: TrialSpec.from_dict(t.config["trial"]).name,
            trial_dirname_creator=lambda t: TrialSpec.from_dict(t.config["trial"]).name,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(folder.resolve()),
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=0,  # the trials' progress lines come through our console; Tune's tables would repeat them
        ),
    )


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep, ready to run under an MLflow run: its own (``tanq sweep``) or a study's stage run."""

    config: Config  # with the tracking URI resolved, for the trials' Ray workers
    trials: list[TrialSpec]
    folder: Path
    fingerprint: str
    resume_run_id: str | None  # the MLflow run of an interrupted invocation, reopened
    concurrency: int
    reference_contrast: dict[str, float] | None  # labelled real hrT2's, for the trials' contrast gaps


def plan_sweep(config: Config, trials: list[TrialSpec] | None = None) -> SweepPlan:
    """Plan and check the sweep: every trial's config is valid, the cluster holds a trial, a resumed sweep is the same one.

    ``trials`` replaces the ``sweep`` section's rows x grid (the study lists its translators' trials itself).
    """
    import ray

    trials = plan_trials(config.sweep) if trials is None else trials
    trial_configs = [trial_config(config, trial) for trial in trials]  # every trial's config is valid before any work
    Manifest.read(config.stage_dir("ingest"))
    folder = sweep_dir(config)
    fingerprint = _fingerprint(config, trials)
    state = _check_resumable(folder, fingerprint)
    ensure_ray(config)
    contrast = reference_contrast(config)  # cuts the evaluation hrT2 to the ROI in Ray tasks
    for trial_settings in trial_configs:
        check_resources(trial_settings)
    concurrency = concurrent_trials(config, ray.cluster_resources(), len(trials))
    # trials run in Ray workers elsewhere: hand them the resolved URI (a relative SQLite path would move)
    uri = Tracker(config).uri
    config = config.model_copy(update={"tracking": config.tracking.model_copy(update={"tracking_uri": uri})})
    return SweepPlan(config, trials, folder, fingerprint, state.get("run_id"), concurrency, contrast)


def run_sweep(config: Config) -> SweepResult:
    """Plan, check, run (or resume) the sweep under its own MLflow run. Raises :class:`SweepFailedError` if trials failed."""
    plan = plan_sweep(config)
    tracker = Tracker(plan.config)
    with tracker.invocation("sweep", tags={"sweep": config.sweep.name}, resume_run_id=plan.resume_run_id) as run:
        return run_planned_sweep(plan, run)


def run_planned_sweep(plan: SweepPlan, run: RunHandle) -> SweepResult:
    """Run (or resume) the planned trials as children of ``run``; write and log the table. Raises :class:`SweepFailedError`."""
    config, trials, folder = plan.config, plan.trials, plan.folder
    started = time.time()
    write_text_atomic(folder / SWEEP_FILE, json.dumps({"fingerprint": plan.fingerprint, "run_id": run.run_id, "trials": [t.name for t in trials]}, indent=1))
    log.info("sweep '%s': %d trials, %d at once; MLflow run %s", config.sweep.name, len(trials), plan.concurrency, run.run_id)
    with _tune_output_to_log():
        results = _tuner(config, trials, folder, run.run_id, plan.concurrency, plan.reference_contrast).fit()
    wall = time.time() - started
    errors = {
        TrialSpec.from_dict(result.config["trial"]).name: f"{type(result.error).__name__}: {result.error}".splitlines()[0][:200]
        for result in results
        if result.error is not None
    }
    table = _table(config, trials, folder, errors)
    markdown, comma_separated = table.write(folder / "results")
    run.log_artifact(markdown)
    run.log_artifact(comma_separated)
    ran_now = [read_trial_record(trial_dir(folder, t)) for t in trials]
    trial_seconds = sum(r["metrics"]["trial_seconds"] for r in ran_now if r.get("metrics") and r.get("started_at", 0) >= started)
    finished = [row for row in table.rows if row["status"] == "finished"]
    best = finished[0]["trial"] if finished else None
    rank = rank_metric(config)
    run.log_metrics(
        {
            "trials": len(trials),
            "trials_finished": len(finished),
            "concurrency": plan.concurrency,
            "wall_seconds": wall,
            "trial_seconds_sum": trial_seconds,
            "parallel_efficiency": trial_seconds / (wall * plan.concurrency) if trial_seconds else float("nan"),
        }
        | ({f"best_{rank}": finished[0][rank]} if finished and rank in finished[0] else {})
    )
    if best:
        run.set_tags({"best_trial": best})
    if errors:
        raise SweepFailedError(f"{len(errors)} of {len(trials)} trials failed (table in {markdown}): " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    return SweepResult(folder, table, markdown, comma_separated, best, plan.concurrency, wall, trial_seconds)
