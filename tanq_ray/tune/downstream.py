"""Downstream Dice of one sweep trial: its translations train nnUNet, which segments labelled evaluation hrT2.

This is the paper's own yardstick (Table 2) and needs evaluation labels; it
costs one segmentation training per trial, so it is off by default
(``sweep.downstream``). The view is the trial's translator alone, not the
multi-view pair, so rows are compared one translator at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tanq_ray.config import Config
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.run_ref import RunRef
from tanq_ray.self_training import hrT2_rois, source_labels, train_and_score, translated_training_cases
from tanq_ray.translate import translate_cohort

log = logging.getLogger(__name__)

DOWNSTREAM_METRICS = ("dice_vs", "dice_cochlea", "dice_mean", "assd_vs", "assd_cochlea")


def evaluation_folders(config: Config) -> tuple[Path, Path] | None:
    """(hrT2 folder, label folder) to score against: the configured ones, or the phantom's; None without labels."""
    if config.data.train_dir is None:
        phantom = config.phantom
        cohort = generate_cohort(config.stage_dir("phantom"), phantom.cases, phantom.eval_cases, phantom.size, phantom.seed)
        return (cohort.eval_dir, cohort.eval_labels_dir) if cohort.eval_case_ids else None
    if config.data.eval_dir is None or config.data.eval_labels_dir is None:
        return None
    return config.data.eval_dir, config.data.eval_labels_dir


def downstream_scores(config: Config, view: str, generator: Path, folder: Path, logging_to: RunRef | None) -> dict[str, float]:
    """Translate with ``generator``, train nnUNet (``segment.*``) under ``folder``, score the evaluation set; {} without labels."""
    folders = evaluation_folders(config)
    if folders is None:
        log.warning("sweep.downstream is on but there are no evaluation labels: no downstream Dice")
        return {}
    eval_dir, labels_dir = folders
    translated = translate_cohort(config.stage_dir("ingest"), {view: generator}, folder / "translate")
    cases = translated_training_cases(translated.cases, config.segment, folder / "segment", views=[view])
    eval_rois = hrT2_rois(config, "eval", eval_dir)
    result = train_and_score(config.segment, folder / "segment", cases, eval_rois, labels_dir, logging_to, source_labels(translated.cases))
    summary = result.evaluation.summary if result.evaluation is not None else {}
    return {key: float(summary[key]) for key in DOWNSTREAM_METRICS if summary.get(key) is not None}


def downstream_scores_outside_trial(
    config: Config, view: str, generator: Path, folder: Path, logging_to: RunRef | None
) -> dict[str, float]:
    """:func:`downstream_scores` in a Ray task scheduled outside the trial's placement group.

    Tune runs a trial in a placement group sized for the trial function and
    pulls every task the trial starts into it; translation and nnUNet tasks
    ask for whole CPUs (and GPUs), so they must be scheduled on the cluster.
    """
    import ray

    task = ray.remote(downstream_scores).options(num_cpus=0, scheduling_strategy="DEFAULT")
    return ray.get(task.remote(config, view, generator, folder, logging_to))
