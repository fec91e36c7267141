"""Model selection: nnUNet's ``find_best_configuration`` over the trained configurations, in a Ray task.

nnUNet gathers each configuration's fold validations into one
cross-validation result, scores every configuration and (with two or more)
every pairwise ensemble of them by foreground Dice, keeps the best (paper
section 3, step 2: "ensemble"), and determines its postprocessing (keep only
the largest component of a class where that raised the cross-validation Dice).
It works for any number of folds because our folds' validation sets together
cover the cases the split held out (:func:`tanq_ray.segment.dataset.fold_splits`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import ray

from tanq_ray.progress_board import worker_output
from tanq_ray.segment.folders import PLANS_NAME, TRAINER_NAME, NnUNetFolders, use_spawn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """nnUNet's choice: one configuration or an ensemble of two, and its postprocessing file.

    Without cross-validation (folds "all") there is nothing to choose from:
    the one configuration, no postprocessing file, no cross-validation Dice.
    """

    configurations: tuple[str, ...]
    postprocessing_file: Path | None
    cv_dice: dict[str, float]  # cross-validation foreground Dice per configuration / ensemble
    cv_dice_selected: float | None  # of the selection, after postprocessing (None without cross-validation)


def _find_best(folders: NnUNetFolders, configurations: list[str], folds: int, processes: int) -> Selection:
    """Task body: run ``find_best_configuration`` and read its answer."""
    use_spawn()
    with worker_output(f"nnunet-select {folders.work_dir.name}"):
        return _find_best_logged(folders, configurations, folds, processes)


def _find_best_logged(folders: NnUNetFolders, configurations: list[str], folds: int, processes: int) -> Selection:
    """:func:`_find_best` once its output goes to the log."""
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration

    models = [{"plans": PLANS_NAME, "configuration": c, "trainer": TRAINER_NAME} for c in configurations]
    info = find_best_configuration(
        folders.dataset,
        models,
        allow_ensembling=len(configurations) > 1,
        num_processes=processes,
        overwrite=True,
        folds=tuple(range(folds)),
    )
    best = info["best_model_or_ensemble"]
    return Selection(
        configurations=tuple(m["configuration"] for m in best["selected_model_or_models"]),
        postprocessing_file=Path(best["postprocessing_file"]),
        cv_dice={key: float(value) for key, value in info["all_results"].items()},
        cv_dice_selected=float(best["result_on_crossval_post_pp"]),
    )


def select_model(
    folders: NnUNetFolders, configurations: Sequence[str], folds: int, use_gpu: bool, processes: int = 1
) -> Selection:
    """Run nnUNet's selection between ``configurations`` (each trained with ``folds`` folds) in a Ray task."""
    start = time.perf_counter()
    task = ray.remote(_find_best).options(
        num_cpus=processes, runtime_env=folders.runtime_env(use_gpu), name="nnunet_find_best_configuration"
    )
    selection = ray.get(task.remote(folders, list(configurations), folds, processes))
    log.info(
        "%s: selected %s (cross-validation Dice %.3f after postprocessing) in %.1f s", folders.work_dir.name,
        " + ".join(selection.configurations), selection.cv_dice_selected, time.perf_counter() - start,
    )  # fmt: skip
    return selection
