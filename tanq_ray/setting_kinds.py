"""Which settings change what a stage produces, and which only change how it runs.

The pipeline's stage keys (:mod:`tanq_ray.pipeline`) hash the first kind only,
so a setting of the second kind (more parallel folds, another tracking
server, a retry budget) never re-runs a stage, and one of the first kind
always does. Every leaf of :class:`~tanq_ray.config.Config` is named here,
by its dotted key or by a section whose keys all share a kind;
``tests/test_setting_kinds.py`` walks the config model and fails on a key
named nowhere, so a new setting cannot slip into the keys (re-running days of
training for a speed change) or out of them (stale results served as cached).

Input folders enter the keys by content too (:func:`folder_fingerprint`):
adding a case or fixing a label under the same path re-runs what reads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tanq_ray.config import Config

CHANGES_RESULTS = frozenset(
    {
        "data.train_dir", "data.eval_dir", "data.eval_labels_dir", "data.train_hrT2_labels_dir",
        "phantom",  # the cohort itself when data.train_dir is unset
        "ingest.spacing", "ingest.crop_size", "ingest.image_size", "ingest.roi_shift_mm", "ingest.percentiles",
        "models",
        "train.batch_size", "train.shuffle_buffer", "train.crop_size", "train.load_size", "train.flip", "train.seed",
        "train.num_workers",  # data-parallel workers multiply the batch: another optimisation
        "segment.configurations", "segment.folds", "segment.epochs", "segment.iterations_per_epoch", "segment.batch_size",
        "segment.initial_lr", "segment.optimizer", "segment.network_width", "segment.foreground_oversampling", "segment.vs_patch_share",
        "segment.views",
        "segment.structure_contrast", "segment.structure_contrast_probability", "segment.vs_texture",
        "segment.translated_structure_min_contrast", "segment.translated_erased_structures", "segment.translated_smoothing",
        "segment.refine_pseudo_labels", "segment.refine_min_confidence", "segment.refine_vs_location_mm",
        "segment.refine_vs_max_fluid_share", "segment.refine_one_cochlea_per_side", "segment.refine_predictions",
        "segment.pseudo_label_vs_margin_mm", "segment.pseudo_label_vs_missing_unlabelled", "segment.self_training_warm_start",
        "segment.test_time_mirroring",
    }
)  # fmt: skip
"""Dotted keys (or whole sections) whose value changes the outputs of the stages that read them."""

CHANGES_HOW_IT_RUNS = frozenset(
    {
        "output_dir", "tracking", "ray",
        "sweep",  # read by `tanq sweep` only, whose trials have their own records
        "study",  # read by `tanq study` only, whose rows have their own records
        "ingest.shard_rows", "ingest.max_parallel", "ingest.on_bad_volume",
        "train.model",  # the pipeline trains every translator; `tanq train` takes it from the command line
        "train.cpus_per_worker", "train.use_gpu", "train.checkpoint_every", "train.max_failures", "train.visual_every",
        "train.bf16",  # bfloat16 autocast on GPUs: a numerical precision, like the device
        "segment.dataset_id", "segment.augmentation_processes", "segment.fold_retries", "segment.max_parallel_folds",
        "segment.self_training_rounds",  # how many round stages exist; no round's output depends on it
    }
)  # fmt: skip
"""Dotted keys (or whole sections) that change speed, resources, logging or where things go, not results."""


def kind_of(key: str) -> str | None:
    """``"results"``, ``"how it runs"`` or None (named nowhere) for a dotted config key."""
    for kind, names in (("results", CHANGES_RESULTS), ("how it runs", CHANGES_HOW_IT_RUNS)):
        if any(key == name or key.startswith(name + ".") for name in names):
            return kind
    return None


def result_settings(config: Config, section: str) -> dict[str, Any]:
    """The result-changing settings under ``section`` (e.g. ``"segment"``), dotted key -> value."""
    return {key: value for key, value in config.section_params(section).items() if kind_of(key) == "results"}


def folder_fingerprint(folder: str | Path | None) -> str | None:
    """A hash of the names, sizes and modification times of every file under ``folder`` (None for None)."""
    if folder is None:
        return None
    root = Path(folder)
    if not root.is_dir():
        return "missing"
    entries = sorted(
        (str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".")
        for stat in [path.stat()]
    )
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
