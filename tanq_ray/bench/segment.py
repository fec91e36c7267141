"""``tanq bench segment``: nnUNet folds as parallel Ray tasks vs one after another, and pseudo-labelling throughput.

A phantom cohort (the tiny config's: 4 subjects, size 96; quick: size 48) is
written as an nnUNet dataset (ceT1 + labels standing in for pseudo-hrT2),
planned and preprocessed once. Then 2d folds with the tiny config's schedule
(2 epochs x 5 iterations, batch 4; 4 folds, quick: 2) train twice from the
same preprocessed data: one fold at a time, and as many at a time as the
cluster's CPUs allow (2 on the 2-core development machine). Wall time covers
everything a fold task does: worker start, nnUNet imports, training and the
final validation.

Pseudo-labelling: the trained folds' ensemble segments the cohort's
unlabelled hrT2 volumes with :func:`predict_volumes` in 1 and in 2 Ray tasks
(after one untimed volume, so one worker is warm); anchored on the paper's
12.1 s per 3-D scan (nnUNet, GPU).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import ray

from tanq_ray.bench import local_ray
from tanq_ray.bench.report import Figure
from tanq_ray.config import CONFIG_DIR, load_config
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.segment.dataset import TrainingCase, fold_splits, write_raw_dataset, write_splits
from tanq_ray.segment.folders import NnUNetFolders, dataset_name
from tanq_ray.segment.folds import run_folds
from tanq_ray.segment.planning import plan_and_preprocess
from tanq_ray.segment.predict import predict_volumes
from tanq_ray.segment.segmenter import train_segmenter

PAPER_SECONDS_PER_SCAN = 12.1  # nnUNet inference per 3-D scan (PAPER.md / DESIGN.md)


def _timed_folds(base: NnUNetFolders, work_dir: Path, settings, max_parallel: int | None) -> tuple[float, float]:
    """Train all folds from a copy of ``base``'s preprocessed data; return (wall seconds, mean seconds per fold task)."""
    folders = NnUNetFolders(work_dir, base.dataset)
    shutil.copytree(base.raw, folders.raw)
    shutil.copytree(base.preprocessed, folders.preprocessed)
    start = time.perf_counter()
    results = run_folds(folders, settings, use_gpu=False, max_parallel=max_parallel)
    wall = time.perf_counter() - start
    return wall, sum(r.seconds for r in results) / len(results)


def _timed_prediction(segmenter, images, out_dir: Path, tasks: int) -> float:
    """Volumes per second of :func:`predict_volumes` over ``images`` split into ``tasks`` chunks."""
    start = time.perf_counter()
    predict_volumes(segmenter, images, out_dir, chunk_size=-(-len(images) // tasks), use_gpu=False)
    return len(images) / (time.perf_counter() - start)


def measure(quick: bool = False) -> list[Figure]:
    """Time folds in parallel vs in series, and prediction with 1 and 2 tasks; ``quick`` = smaller and fewer."""
    local_ray()
    slots = int(ray.cluster_resources().get("CPU", 1))
    folds = 2 if quick else 4
    settings = load_config(CONFIG_DIR / "tiny.yaml").segment.model_copy(update={"configurations": ["2d"], "folds": folds})
    with tempfile.TemporaryDirectory(prefix="tanq-bench-segment-") as folder:
        root = Path(folder)
        cohort = generate_cohort(root / "cohort", cases=4, eval_cases=0, size=48 if quick else 96, seed=0)
        train = cohort.train_dir
        cases = [TrainingCase(c, train / f"{c}_ceT1.nii.gz", train / f"{c}_Label.nii.gz") for c in cohort.labelled_cases]
        base = NnUNetFolders(root / "base", dataset_name(settings.dataset_id))
        write_raw_dataset(base, cases)
        plan_and_preprocess(base, settings.dataset_id, settings.configurations, False, min(2, slots))
        write_splits(base, fold_splits(cases, folds))

        serial_wall, serial_fold = _timed_folds(base, root / "serial", settings, max_parallel=1)
        parallel_wall, parallel_fold = _timed_folds(base, root / "parallel", settings, max_parallel=None)

        segmenter = train_segmenter(settings, root / "parallel", cases, use_gpu=False)  # folds done: selection only
        images = [(c, train / f"{c}_hrT2.nii.gz") for c in cohort.unlabelled_cases]
        predict_volumes(segmenter, images[:1], root / "warm-up", use_gpu=False)
        rates = {tasks: _timed_prediction(segmenter, images, root / f"pred-{tasks}", tasks) for tasks in (1, 2)}

    size = 48 if quick else 96
    note = f"2d, {settings.epochs} epochs x {settings.iterations_per_epoch} it, batch {settings.batch_size}, phantom {size}"
    return [
        Figure(f"{folds} folds, one at a time", serial_wall, "s", note=note),
        Figure(f"{folds} folds as Ray tasks, {min(slots, folds)} at a time", parallel_wall, "s",
               "one at a time", serial_wall, note),
        Figure("fold task, one at a time", serial_fold, "s/fold", note="inside the task: training + final validation"),
        Figure(f"fold task, {min(slots, folds)} at a time", parallel_fold, "s/fold", "one at a time", serial_fold),
        Figure("pseudo-labelling, 1 Ray task", rates[1], "volumes/s",
               note=f"{len(images)} hrT2 volumes, {folds}-fold ensemble"),
        Figure("pseudo-labelling, 2 Ray tasks", rates[2], "volumes/s", "1 task", rates[1]),
        Figure("pseudo-labelling, 1 Ray task", 1 / rates[1], "s/volume", "paper, nnUNet on GPU", PAPER_SECONDS_PER_SCAN,
               "CPU, 1 thread per task; the paper's scans are far larger"),
    ]  # fmt: skip
