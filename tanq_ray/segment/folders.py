"""nnUNet's three folders under one work folder, and the process environment that points nnUNet at them.

nnUNet finds its data through the environment variables ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results``; some nnunetv2 releases read
them once, when ``nnunetv2.paths`` is first imported, and copy the values into
other modules' globals (``from nnunetv2.paths import nnUNet_results``), and
``nnunetv2.configuration`` reads ``nnUNet_def_n_proc`` at import in every
release. One process therefore cannot switch safely between the work folders of
two self-training rounds.

The choice made here: **no nnUNet code runs in the calling process**. Every
nnUNet step (integrity check, planning, preprocessing, a fold's training,
model selection, prediction) runs in a Ray task started with
``runtime_env={"env_vars": ...}`` from :meth:`NnUNetFolders.runtime_env`. Ray
starts a dedicated worker process for each distinct environment, with the
variables already set before Python starts, so nnunetv2 is imported fresh in a
process that only ever sees one work folder; workers are reused only by tasks
with the same environment. The driver writes plain files (dataset, splits) and
never imports nnunetv2.

Ray workers run several threads, and a process forked while another thread
holds a lock can hang forever; some nnUNet helpers open pools with the
platform's default start method (fork on Linux). Every nnUNet task therefore
starts with :func:`use_spawn`.
"""

from __future__ import annotations

import multiprocessing
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

DATASET_NAME = "TanqVS"  # nnUNet dataset names are Dataset<ID>_<name>
TRAINER_NAME = "TanqTrainer"  # must match tanq_ray.segment.trainer.TanqTrainer.__name__
PLANS_NAME = "nnUNetPlans"  # nnUNet's default experiment planner writes these plans
AUGMENTATION_VARIABLE = "nnUNet_n_proc_DA"


def use_spawn() -> None:
    """Start this process's multiprocessing children with spawn, never fork (see the module docstring)."""
    if multiprocessing.get_start_method(allow_none=True) != "spawn":
        multiprocessing.set_start_method("spawn", force=True)


def dataset_name(dataset_id: int) -> str:
    """nnUNet's folder name for a dataset id, e.g. 501 -> ``Dataset501_TanqVS``."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"segment.dataset_id must be within 1..999 (nnUNet uses three digits), got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{DATASET_NAME}"


@dataclass(frozen=True)
class NnUNetFolders:
    """``<work_dir>/nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` for one dataset."""

    work_dir: Path
    dataset: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "work_dir", Path(self.work_dir).resolve())

    @property
    def raw(self) -> Path:
        return self.work_dir / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.work_dir / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.work_dir / "nnUNet_results"

    @property
    def raw_dataset(self) -> Path:
        """Holds ``dataset.json``, ``imagesTr/`` and ``labelsTr/``."""
        return self.raw / self.dataset

    @property
    def preprocessed_dataset(self) -> Path:
        """Holds the plans, the fingerprint, ``splits_final.json`` and one data folder per configuration."""
        return self.preprocessed / self.dataset

    def model_dir(self, configuration: str) -> Path:
        """Training output of one configuration: ``fold_<k>/`` folders, ``plans.json``, ``dataset.json``."""
        return self.results / self.dataset / f"{TRAINER_NAME}__{PLANS_NAME}__{configuration}"

    def fold_dir(self, configuration: str, fold: int | str) -> Path:
        return self.model_dir(configuration) / f"fold_{fold}"

    def environment(self, use_gpu: bool) -> dict[str, str]:
        """Environment variables of a process that runs nnUNet steps on these folders.

        The export pools nnUNet opens without an explicit size get one
        process. torch.compile stays off on CPU (nnUNet refuses it there too).
        Every nnUNet step on these folders gets this same environment, so Ray
        can hand a finished step's worker, torch and nnUNet already imported
        (about 13 s of CPU on a 2-core machine), to the next step: planning,
        then the folds, then prediction. What differs per step (the
        training's augmentation processes) is set inside the task
        (:func:`augmentation_processes`).
        """
        env = {
            "nnUNet_raw": str(self.raw),
            "nnUNet_preprocessed": str(self.preprocessed),
            "nnUNet_results": str(self.results),
            "nnUNet_def_n_proc": "1",
        }
        if not use_gpu:
            env["nnUNet_compile"] = "false"
        return env

    def runtime_env(self, use_gpu: bool) -> dict[str, Any]:
        """Ray ``runtime_env`` for tasks that run nnUNet on these folders (see the module docstring)."""
        return {"env_vars": self.environment(use_gpu)}


@contextmanager
def augmentation_processes(count: int) -> Iterator[None]:
    """``nnUNet_n_proc_DA = count`` in this process while open; the previous value after.

    nnUNet's trainer reads it when it builds its data loaders: 0 augments in
    the training process (nnUNet's single-threaded augmenter). It is set for
    the duration of a fold only: nnUNet's planner takes it as a torch thread
    count, which must be >= 1, and a later task may run in the same worker.
    """
    previous = os.environ.get(AUGMENTATION_VARIABLE)
    os.environ[AUGMENTATION_VARIABLE] = str(count)
    try:
        yield
    finally:
        if previous is None:
            del os.environ[AUGMENTATION_VARIABLE]
        else:
            os.environ[AUGMENTATION_VARIABLE] = previous
