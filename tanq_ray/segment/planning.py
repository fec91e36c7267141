"""nnUNet's integrity check, fingerprint, experiment planning and preprocessing, in one Ray task.

Runs nnUNet's own Python API (``verify_dataset_integrity``,
``extract_fingerprint_dataset``, ``plan_experiment_dataset``,
``preprocess_dataset``) in a worker whose environment points at the work
folder (see :mod:`tanq_ray.segment.folders`). When it succeeds it writes
``tanq_preprocessed.json`` beside the plans; a later call that finds it,
written for the same raw dataset and covering the requested configurations,
does nothing.

nnUNet opens a spawn pool for each of its three per-case steps, even of one
process. A spawned child imports torch and nnUNet before it does any work,
about 4 s each on a 2-core machine, while a tiny-configuration case takes
about 0.5 s of work in all three steps: for a few dozen small cases the pools
cost more than the work. With one process (:func:`planning_processes`) the
steps therefore run on a thread of the task's own process
(:func:`pools_in_this_process`); nnUNet's code is unchanged.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from contextlib import contextmanager, nullcontext
from multiprocessing.pool import ThreadPool
from typing import Any, Iterator, Sequence

import ray

from tanq_ray import progress_board
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.progress_board import worker_output
from tanq_ray.segment.dataset import DatasetError
from tanq_ray.segment.folders import PLANS_NAME, NnUNetFolders, use_spawn

log = logging.getLogger(__name__)

MARKER = "tanq_preprocessed.json"
CASES_PER_PROCESS = 48  # below this many cases per process, nnUNet's spawned pools cost more than they save (module docstring)
PLANNED_FEATURES_KEY = "tanq_planned_features_per_stage"


def _marker_content(folders: NnUNetFolders, configurations: Sequence[str]) -> dict:
    dataset_json = json.loads((folders.raw_dataset / "dataset.json").read_text())
    return {"configurations": sorted(configurations), "sources": dataset_json.get("tanq_sources")}


def is_preprocessed(folders: NnUNetFolders, configurations: Sequence[str]) -> bool:
    """True when this raw dataset was already planned and preprocessed for every requested configuration."""
    marker = folders.preprocessed_dataset / MARKER
    if not marker.is_file():
        return False
    done = json.loads(marker.read_text())
    wanted = _marker_content(folders, configurations)
    return done.get("sources") == wanted["sources"] and set(wanted["configurations"]) <= set(done["configurations"])


def planning_processes(cases: int, free_cpus: int) -> int:
    """Processes for nnUNet's planning pools: one per :data:`CASES_PER_PROCESS` cases, within [1, ``free_cpus``]."""
    return max(1, min(free_cpus, cases // CASES_PER_PROCESS))


class _ThreadContext:
    """Stands in for multiprocessing's spawn context: ``Pool(n)`` is one thread of this process."""

    @staticmethod
    def Pool(*args: Any, **kwargs: Any) -> ThreadPool:  # noqa: N802 (multiprocessing's name)
        return ThreadPool(1)


@contextmanager
def pools_in_this_process() -> Iterator[None]:
    """While open, ``multiprocessing.get_context("spawn").Pool(n)`` (how nnUNet opens its pools) runs on one thread here."""
    original = multiprocessing.get_context

    def get_context(method: str | None = None) -> Any:
        return _ThreadContext() if method == "spawn" else original(method)

    multiprocessing.get_context = get_context
    try:
        yield
    finally:
        multiprocessing.get_context = original


def _plan_and_preprocess(folders: NnUNetFolders, dataset_id: int, configurations: list[str], processes: int) -> None:
    """Task body: check, fingerprint, plan, preprocess (nnUNet's Python API, ``processes`` worker processes)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    use_spawn()
    with worker_output(f"nnunet-plan {folders.work_dir.name}"), pools_in_this_process() if processes == 1 else nullcontext():
        try:
            verify_dataset_integrity(str(folders.raw_dataset), processes)
        except (AssertionError, RuntimeError) as err:
            raise DatasetError(
                f"nnUNet's integrity check rejected '{folders.raw_dataset}': {err} "
                f"(its output, in logs/nnunet-plan_{folders.work_dir.name}.log under the output folder, names the files)"
            ) from None
        extract_fingerprint_dataset(dataset_id, num_processes=processes, clean=True, verbose=False, show_progress_bar=False)
        plan_experiment_dataset(dataset_id)
        preprocess_dataset(dataset_id, PLANS_NAME, configurations, [processes] * len(configurations), show_progress_bar=False)


def plan_and_preprocess(
    folders: NnUNetFolders, dataset_id: int, configurations: Sequence[str], use_gpu: bool, processes: int
) -> bool:
    """Plan and preprocess the raw dataset in a Ray task unless already done; return True when work was done."""
    row = folders.work_dir.name
    if is_preprocessed(folders, configurations):
        log.info("%s: plans and preprocessed data found, skipping preprocessing", row)
        return False
    log.info("%s: integrity check, planning and preprocessing %s", row, list(configurations))
    progress_board.post(f"nnunet {row}", "planning and preprocessing")
    start = time.perf_counter()
    task = ray.remote(_plan_and_preprocess).options(
        num_cpus=processes, runtime_env=folders.runtime_env(use_gpu), name="nnunet_plan_and_preprocess"
    )
    try:
        ray.get(task.remote(folders, dataset_id, list(configurations), processes))
    finally:
        progress_board.clear(f"nnunet {row}")
    write_text_atomic(
        folders.preprocessed_dataset / MARKER, json.dumps(_marker_content(folders, configurations), indent=2)
    )
    log.info("%s: preprocessed in %.1f s", row, time.perf_counter() - start)
    return True


def set_network_width(folders: NnUNetFolders, configurations: Sequence[str], width: int | None) -> None:
    """Narrow nnUNet's planned U-Net in its own plans file: stage ``i`` gets ``min(width * 2**i, planned)`` features.

    nnUNet plans 32 features in the first stage, doubling per stage up to its
    cap; that network is sized for a GPU. A ``width`` keeps the plan's stages,
    kernels and strides and only narrows the features, so a CPU trains it in
    minutes; ``None`` keeps nnUNet's plan. The planned widths are kept in the
    configuration (``tanq_planned_features_per_stage``), so a later call can widen
    again. Training reads these plans: set them before the folds run.
    """
    path = folders.preprocessed_dataset / f"{PLANS_NAME}.json"
    plans = json.loads(path.read_text())
    for name in configurations:
        configuration = plans["configurations"][name]
        arch = configuration["architecture"]["arch_kwargs"]
        planned = configuration.setdefault(PLANNED_FEATURES_KEY, list(arch["features_per_stage"]))
        arch["features_per_stage"] = [f if width is None else min(width * 2**i, f) for i, f in enumerate(planned)]
    write_text_atomic(path, json.dumps(plans, indent=1))
