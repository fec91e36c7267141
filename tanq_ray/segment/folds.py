"""Cross-validation folds as Ray tasks: train (or resume) one (configuration, fold) pair and run its final validation.

Each pair is one Ray task (1 CPU plus any augmentation processes, 1 GPU when
asked) in a worker whose environment points at the work folder. A task that
fails, or whose worker dies, is retried by Ray (``max_retries``,
``retry_exceptions=True``); the retry resumes from nnUNet's
``checkpoint_latest.pth``. A fold with ``checkpoint_final.pth`` and a final
validation is complete and never retrained; one with ``checkpoint_final.pth``
but no validation only runs the validation.

With the row's run (a :class:`~tanq_ray.run_ref.RunRef`), each pair that needs work gets an MLflow child run
(tags ``stage=fold``, ``configuration``, ``fold``) created here and passed to
the task, so retries log into the same run; the trainer logs one step per
epoch (:mod:`tanq_ray.segment.trainer`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import ray

from tanq_ray.config import SegmentConfig
from tanq_ray.labels import DISPLAY_NAMES
from tanq_ray.progress_board import worker_output
from tanq_ray.run_ref import RunRef
from tanq_ray.segment.folders import PLANS_NAME, NnUNetFolders, augmentation_processes, use_spawn
from tanq_ray.segment.schedule import FoldSchedule
from tanq_ray.tracking_buffer import BackgroundLog

log = logging.getLogger(__name__)

CLASS_NAMES = DISPLAY_NAMES


@dataclass(frozen=True)
class FoldResult:
    """What happened to one (configuration, fold) pair in one :func:`run_folds` call.

    ``trained`` is False when the fold was already complete; ``start_epoch``
    is the epoch training started from (0 = from scratch, > 0 = resumed from
    ``checkpoint_latest.pth``; ``epochs`` when only the validation ran).
    """

    configuration: str
    fold: int | str  # 0, 1, ... or "all"
    trained: bool
    start_epoch: int
    epochs: int
    seconds: float
    validation_dice: dict[str, float]


def final_validation_dice(fold_dir: Path) -> dict[str, float]:
    """Foreground-mean and per-class Dice of a fold's final validation (nnUNet's ``validation/summary.json``)."""
    summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
    dice = {"final_val_dice": float(summary["foreground_mean"]["Dice"])}
    for label, metrics in summary["mean"].items():
        dice[f"final_val_dice_{CLASS_NAMES.get(int(label), label)}"] = float(metrics["Dice"])
    return dice


def validates(fold: int | str) -> bool:
    """Whether a fold has a final validation: cross-validation folds do; fold "all" holds no case out, so it has none."""
    return fold != "all"


def is_complete(folders: NnUNetFolders, configuration: str, fold: int | str) -> bool:
    """A finished training (``checkpoint_final.pth``) with its final validation (when the fold has one)."""
    fold_dir = folders.fold_dir(configuration, fold)
    validated = not validates(fold) or (fold_dir / "validation" / "summary.json").is_file()
    return (fold_dir / "checkpoint_final.pth").is_file() and validated


def _validation_dice(folders: NnUNetFolders, configuration: str, fold: int | str) -> dict[str, float]:
    return final_validation_dice(folders.fold_dir(configuration, fold)) if validates(fold) else {}


def _train_fold(
    folders: NnUNetFolders,
    schedule: FoldSchedule,
    configuration: str,
    fold: int | str,
    device_type: str,
    save_probabilities: bool,
    tracking: RunRef | None,
    warm_start: NnUNetFolders | None,
) -> FoldResult:
    """Task body: build the trainer, resume from the newest checkpoint, train, validate (output to a log file)."""
    use_spawn()
    log_name = f"nnunet {folders.work_dir.name} {configuration}-{fold}"
    with worker_output(log_name) as progress, augmentation_processes(schedule.augmentation_processes):
        return _train_fold_logged(
            folders, schedule, configuration, fold, device_type, save_probabilities, tracking, progress, warm_start
        )


def _train_fold_logged(
    folders: NnUNetFolders,
    schedule: FoldSchedule,
    configuration: str,
    fold: int | str,
    device_type: str,
    save_probabilities: bool,
    tracking: RunRef | None,
    progress: Callable[[str], None],
    warm_start: NnUNetFolders | None = None,
) -> FoldResult:
    """:func:`_train_fold` once its output goes to the log; ``progress`` hears of each epoch.

    ``warm_start``: a fold that starts afresh begins from the weights of the
    same fold of that finished model (self-training's warm start); a resumed
    fold goes on from its own checkpoint.
    """
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from tanq_ray.segment.trainer import TanqTrainer

    start = time.perf_counter()
    fold_dir = folders.fold_dir(configuration, fold)
    final, latest = fold_dir / "checkpoint_final.pth", fold_dir / "checkpoint_latest.pth"
    resume_from = final if final.is_file() else latest if latest.is_file() else None
    plans = load_json(str(folders.preprocessed_dataset / f"{PLANS_NAME}.json"))
    plans["continue_training"] = resume_from is not None
    dataset_json = load_json(str(folders.preprocessed_dataset / "dataset.json"))
    run = BackgroundLog(tracking.handle()) if tracking else None

    try:
        trainer = TanqTrainer(plans, configuration, fold, dataset_json, torch.device(device_type))
        trainer.configure(schedule, run, progress)
        if resume_from is not None:
            trainer.load_checkpoint(str(resume_from))
        elif warm_start is not None:
            trainer.start_from(warm_start.fold_dir(configuration, fold) / "checkpoint_final.pth")
        start_epoch = trainer.current_epoch
        print(f"fold {configuration}/{fold} started at epoch {start_epoch} of {schedule.epochs}", flush=True)
        if run is not None:
            run.log_metrics({"start_epoch": start_epoch}, step=start_epoch)
        if resume_from != final:
            trainer.run_training()
        if validates(fold):
            trainer.perform_actual_validation(save_probabilities)
        dice = _validation_dice(folders, configuration, fold)
        if run is not None and dice:
            run.log_metrics(dice, step=schedule.epochs)
    finally:
        if run is not None:
            run.close()  # what is still queued, also when the fold failed
    return FoldResult(configuration, fold, True, start_epoch, schedule.epochs, time.perf_counter() - start, dice)


def _fold_run(logging: RunRef, schedule: FoldSchedule, row: str, configuration: str, fold: int | str) -> RunRef:
    """The fold's MLflow run under the row's, named after its row (the work folder: ``round_0``, ``source-only``, ...)."""
    tags = {"stage": "fold", "row": row, "configuration": configuration, "fold": fold}
    return logging.child(f"{row} fold {configuration}/{fold}", tags, {"configuration": configuration, "fold": fold, **asdict(schedule)})


def run_folds(
    folders: NnUNetFolders,
    settings: SegmentConfig,
    use_gpu: bool,
    logging: RunRef | None = None,
    max_parallel: int | None = None,
    warm_start: NnUNetFolders | None = None,
) -> list[FoldResult]:
    """Train every (configuration, fold) pair of ``settings`` that is not complete, as parallel Ray tasks.

    ``max_parallel`` caps the tasks in flight (None = as many as the
    cluster's resources allow). ``warm_start``: the folders of a finished
    model whose same fold each new fold starts from (None = nnUNet's random
    initialisation). Waits for all tasks, so folds that succeed
    are kept for the next call, then raises ``RuntimeError`` naming the folds
    that failed, if any.
    """
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1 or None, got {max_parallel}")
    schedule = FoldSchedule.from_settings(settings)
    retries = settings.fold_retries
    save_probabilities = len(settings.configurations) > 1  # ensembling configurations needs the softmax outputs
    task = ray.remote(max_retries=retries, retry_exceptions=True)(_train_fold)
    resources = {
        "num_cpus": 1 + schedule.augmentation_processes,
        "num_gpus": 1 if use_gpu else 0,
        "runtime_env": folders.runtime_env(use_gpu),
    }
    results: list[FoldResult] = []
    todo: list[tuple[str, int | str]] = []
    for configuration in settings.configurations:
        for fold in settings.fold_ids:
            if is_complete(folders, configuration, fold):
                dice = _validation_dice(folders, configuration, fold)
                results.append(FoldResult(configuration, fold, False, settings.epochs, settings.epochs, 0.0, dice))
                log.info("%s: fold %s/%s already complete, skipping", folders.work_dir.name, configuration, fold)
            else:
                todo.append((configuration, fold))

    pending: dict[ray.ObjectRef, tuple[str, int | str, RunRef | None, float]] = {}
    failures = []
    while todo or pending:
        while todo and (max_parallel is None or len(pending) < max_parallel):
            configuration, fold = todo.pop(0)
            run = _fold_run(logging, schedule, folders.work_dir.name, configuration, fold) if logging else None
            device = "cuda" if use_gpu else "cpu"
            ref = task.options(**resources, name=f"nnunet_fold_{configuration}_{fold}").remote(
                folders, schedule, configuration, fold, device, save_probabilities, run, warm_start
            )
            pending[ref] = (configuration, fold, run, time.perf_counter())
        [ref], _ = ray.wait(list(pending), num_returns=1)
        configuration, fold, run, submitted = pending.pop(ref)
        try:
            result = ray.get(ref)
        except Exception as err:  # the task's error after all retries, or a lost worker
            failures.append(f"{configuration}/{fold}: {type(err).__name__}: {err}")
            if run is not None:
                run.end("FAILED", error=f"{type(err).__name__}: {err}")
            log.warning("%s: fold %s/%s failed after %.1f s: %s", folders.work_dir.name, configuration, fold, time.perf_counter() - submitted, failures[-1])
            continue
        results.append(result)
        if run is not None:
            run.end()
        validation = result.validation_dice.get("final_val_dice")
        log.info(
            "%s: fold %s/%s finished in %.1f s (from epoch %d%s)", folders.work_dir.name, configuration, fold,
            time.perf_counter() - submitted, result.start_epoch, "" if validation is None else f", validation Dice {validation:.3f}",
        )  # fmt: skip
    if failures:
        raise RuntimeError("nnUNet folds failed:\n  " + "\n  ".join(failures))
    return sorted(results, key=lambda r: (settings.configurations.index(r.configuration), settings.fold_ids.index(r.fold)))
