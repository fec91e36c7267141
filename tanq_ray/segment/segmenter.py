"""Train a segmenter: raw dataset -> plans -> folds as Ray tasks -> nnUNet's model selection.

:func:`train_segmenter` is resumable at every step: an identical raw dataset
is kept, preprocessing is skipped when done, complete folds are not retrained
and interrupted ones resume from their checkpoint, and when no fold had to
train the selection saved in ``<work_dir>/segmenter.json`` is reused.
:func:`load_segmenter` reads that file back.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import ray

from tanq_ray.config import SegmentConfig
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.segment.dataset import TrainingCase, fold_splits, write_raw_dataset, write_splits
from tanq_ray.segment.folders import PLANS_NAME, TRAINER_NAME, NnUNetFolders, dataset_name
from tanq_ray.run_ref import RunRef
from tanq_ray.segment.folds import FoldResult, run_folds
from tanq_ray.segment.planning import plan_and_preprocess, planning_processes, set_network_width
from tanq_ray.segment.selection import Selection, select_model

log = logging.getLogger(__name__)

SEGMENTER_FILE = "segmenter.json"
MAX_POOL_PROCESSES = 8  # nnUNet's default pool size for 2d preprocessing


@dataclass(frozen=True)
class Segmenter:
    """A trained, selected nnUNet model: what prediction needs, and how this call got it.

    ``configurations`` is nnUNet's selection (one configuration, or two whose
    softmax outputs are averaged); every fold of each is used. With folds
    ``("all",)`` there is no selection and no postprocessing
    (``postprocessing_file`` None, ``cv_dice`` empty). ``trained`` is True
    when this call trained at least one fold.
    """

    work_dir: Path
    dataset_name: str
    configurations: tuple[str, ...]
    folds: tuple[int | str, ...]
    postprocessing_file: Path | None
    cv_dice: dict[str, float]
    cv_dice_selected: float | None
    trainer_name: str = TRAINER_NAME
    plans_name: str = PLANS_NAME
    fold_results: tuple[FoldResult, ...] = ()

    @property
    def folders(self) -> NnUNetFolders:
        return NnUNetFolders(self.work_dir, self.dataset_name)

    @property
    def trained(self) -> bool:
        return any(result.trained for result in self.fold_results)

    def save(self) -> Path:
        """Write ``<work_dir>/segmenter.json`` atomically, with paths relative to the work folder (it may move)."""
        data = asdict(self)
        del data["work_dir"]
        if self.postprocessing_file is not None:
            data["postprocessing_file"] = str(self.postprocessing_file.relative_to(self.work_dir))
        return write_text_atomic(self.work_dir / SEGMENTER_FILE, json.dumps(data, indent=2))


def load_segmenter(work_dir: str | Path) -> Segmenter:
    """The segmenter that :func:`train_segmenter` finished in ``work_dir``."""
    work_dir = Path(work_dir).resolve()
    path = work_dir / SEGMENTER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' does not exist: train_segmenter has not finished in '{work_dir}'")
    data = json.loads(path.read_text())
    try:
        return Segmenter(
            work_dir=work_dir,
            dataset_name=data["dataset_name"],
            configurations=tuple(data["configurations"]),
            folds=tuple(data["folds"]),
            postprocessing_file=work_dir / data["postprocessing_file"] if data["postprocessing_file"] else None,
            cv_dice=dict(data["cv_dice"]),
            cv_dice_selected=None if data["cv_dice_selected"] is None else float(data["cv_dice_selected"]),
            trainer_name=data["trainer_name"],
            plans_name=data["plans_name"],
            fold_results=tuple(FoldResult(**result) for result in data["fold_results"]),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"'{path}' is not a segmenter description written by this version ({err})") from None


def _cluster_has_gpu() -> bool:
    return ray.cluster_resources().get("GPU", 0) >= 1


def _pool_size() -> int:
    """Processes for nnUNet's pools in the planning and selection tasks: the free CPUs, at most 8."""
    return max(1, min(MAX_POOL_PROCESSES, int(ray.available_resources().get("CPU", 1))))


def _reusable(work_dir: Path, settings: SegmentConfig) -> Segmenter | None:
    """The saved segmenter, when it was selected among the same configurations and folds."""
    if not (work_dir / SEGMENTER_FILE).is_file():
        return None
    saved = load_segmenter(work_dir)
    considered = {result.configuration for result in saved.fold_results}
    if considered != set(settings.configurations) or saved.folds != settings.fold_ids:
        return None
    return saved


def train_segmenter(
    settings: SegmentConfig,
    work_dir: str | Path,
    cases: Sequence[TrainingCase],
    logging: RunRef | None = None,
    use_gpu: bool | None = None,
    warm_start: Segmenter | None = None,
) -> Segmenter:
    """Train nnUNet on ``cases`` under ``work_dir`` and let nnUNet select the configuration(s).

    ``warm_start``: a trained model of the same configurations, folds and
    network width whose weights each fold starts from (self-training's warm
    start); None = nnUNet's random initialisation.

    Steps: write and check the raw dataset; nnUNet's integrity check, planning
    and preprocessing; ``settings.folds`` folds of each of
    ``settings.configurations`` as parallel Ray tasks (retried from their
    checkpoint when they die); ``find_best_configuration``. With
    ``settings.folds == "all"`` one model trains on every case and nothing is
    selected. ``use_gpu`` None = use GPUs when the Ray cluster has any. Ray
    must be initialised by the caller.
    """
    if not ray.is_initialized():
        raise RuntimeError("train_segmenter runs nnUNet in Ray tasks: call ray.init() first")
    work_dir = Path(work_dir).resolve()
    use_gpu = _cluster_has_gpu() if use_gpu is None else use_gpu
    folders = NnUNetFolders(work_dir, dataset_name(settings.dataset_id))
    start = time.perf_counter()
    cross_validated = settings.folds != "all"
    splits = fold_splits(cases, settings.folds) if cross_validated else None  # fails early when there are too few subjects
    if write_raw_dataset(folders, cases):
        log.info("%s: wrote %d training cases to '%s'", work_dir.name, len(cases), folders.raw_dataset)
    processes = planning_processes(len(cases), _pool_size())
    plan_and_preprocess(folders, settings.dataset_id, settings.configurations, use_gpu, processes)
    set_network_width(folders, settings.configurations, settings.network_width)
    if splits is not None:
        write_splits(folders, splits)
    max_parallel = settings.max_parallel_folds
    start_from = None if warm_start is None else warm_start.folders
    fold_results = tuple(run_folds(folders, settings, use_gpu, logging, max_parallel, start_from))
    saved = None if any(r.trained for r in fold_results) else _reusable(work_dir, settings)
    if not cross_validated:
        selection = Selection(tuple(settings.configurations), None, {}, None)
    elif saved is not None:
        selection = Selection(saved.configurations, saved.postprocessing_file, saved.cv_dice, saved.cv_dice_selected)
    else:
        selection = select_model(folders, settings.configurations, settings.folds, use_gpu, _pool_size())
    segmenter = Segmenter(
        work_dir=work_dir,
        dataset_name=folders.dataset,
        configurations=selection.configurations,
        folds=settings.fold_ids,
        postprocessing_file=selection.postprocessing_file,
        cv_dice=selection.cv_dice,
        cv_dice_selected=selection.cv_dice_selected,
        fold_results=fold_results,
    )
    segmenter.save()
    log.info("%s: segmenter ready in %.1f s: %s", work_dir.name, time.perf_counter() - start, segmenter.configurations)
    return segmenter
