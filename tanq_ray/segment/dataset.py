"""The nnUNet raw dataset: training pairs checked, written as ``imagesTr/``, ``labelsTr/``, ``dataset.json``, plus the folds.

Each :class:`TrainingCase` becomes ``imagesTr/<case_id>_0000.nii.gz`` and
``labelsTr/<case_id>.nii.gz`` (a hard link where the file system allows it,
else a copy). Before anything is written every pair is checked, so bad input
fails with the file's name: both files exist and are 3-D NIfTI, they share
shape and voxel size, and the label holds only 0 (background), 1 (VS) and
2 (cochlea), and 3 (unlabelled) in a case marked ``partial``. A dataset with a
partial case declares nnUNet's ``ignore`` label, so nnUNet computes no loss on
those voxels. ``dataset.json`` is written last and lists the sources; an
existing one with the same sources means the dataset is complete and is kept.

Cross-validation folds group cases by subject, so the views of one subject
(the multi-view pseudo-hrT2 volumes of the paper, ids ``<subject>__<view>``)
never sit on both sides of a split.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from tanq_ray.io_utils import atomic_path, write_text_atomic
from tanq_ray.labels import NNUNET_LABELS, NNUNET_UNLABELLED, UNLABELLED
from tanq_ray.segment.folders import NnUNetFolders

LABELS = NNUNET_LABELS
CHANNEL_NAME = "hrT2"
FILE_ENDING = ".nii.gz"
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VIEW_SEPARATOR = "__"
SPLIT_SEED = 12345  # nnUNet's seed for its own 5-fold split
SPACING_TOLERANCE = 1e-3  # relative


class DatasetError(ValueError):
    """A training pair cannot be used; the message names the file and what was expected."""


@dataclass(frozen=True)
class TrainingCase:
    """One nnUNet training pair: an hrT2 volume (real or translated) and its label on the same grid.

    ``case_id`` must be unique. Cases of one ``subject`` stay in the same
    fold; unset, the subject is the part of ``case_id`` before ``"__"``.
    ``partial``: the label may mark voxels :data:`~tanq_ray.labels.UNLABELLED`
    (no loss there).
    """

    case_id: str
    image: Path
    label: Path
    group: str = ""
    partial: bool = False

    @property
    def subject(self) -> str:
        return self.group or self.case_id.split(VIEW_SEPARATOR)[0]


def _load(path: Path, what: str, case_id: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise DatasetError(f"case '{case_id}': {what} file '{path}' does not exist")
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise DatasetError(f"case '{case_id}': {what} file '{path}' is not a readable NIfTI volume ({err})") from None
    if len(image.shape) != 3:
        raise DatasetError(f"case '{case_id}': {what} file '{path}' must be a 3-D volume, got shape {image.shape}")
    return image


def check_case(case: TrainingCase) -> None:
    """Raise :class:`DatasetError` unless the pair is a usable nnUNet training case."""
    if not CASE_ID_PATTERN.match(case.case_id):
        raise DatasetError(
            f"case id '{case.case_id}' may only hold letters, digits, '.', '_' and '-' (and not start with '.', '_', '-')"
        )
    image = _load(Path(case.image), "image", case.case_id)
    label = _load(Path(case.label), "label", case.case_id)
    if image.shape != label.shape:
        raise DatasetError(
            f"case '{case.case_id}': label '{case.label}' has shape {label.shape} but image '{case.image}' has {image.shape}"
        )
    image_spacing, label_spacing = image.header.get_zooms()[:3], label.header.get_zooms()[:3]
    if not np.allclose(image_spacing, label_spacing, rtol=SPACING_TOLERANCE):
        raise DatasetError(
            f"case '{case.case_id}': label '{case.label}' has voxel size {tuple(map(float, label_spacing))} mm but image "
            f"'{case.image}' has {tuple(map(float, image_spacing))} mm"
        )
    values = np.unique(np.asanyarray(label.dataobj))
    allowed = set(LABELS.values()) | ({UNLABELLED} if case.partial else set())
    unexpected = sorted(set(values.tolist()) - allowed)
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:10])
        expected = "0 background, 1 VS, 2 cochlea" + (", 3 unlabelled" if case.partial else "")
        raise DatasetError(f"case '{case.case_id}': label '{case.label}' holds values [{shown}] outside {{{expected}}}")


def _sources(cases: Sequence[TrainingCase]) -> dict[str, dict[str, list]]:
    """What the dataset was built from: per case, each file's path, size and modification time."""

    def stamp(path: Path) -> list:
        if not Path(path).is_file():
            return [str(Path(path).resolve()), None, None]
        status = Path(path).stat()
        return [str(Path(path).resolve()), status.st_size, status.st_mtime_ns]

    return {case.case_id: {"image": stamp(case.image), "label": stamp(case.label)} for case in cases}


def _image_file(case_id: str) -> str:
    return f"imagesTr/{case_id}_0000{FILE_ENDING}"


def _label_file(case_id: str) -> str:
    return f"labelsTr/{case_id}{FILE_ENDING}"


def _dataset_json(cases: Sequence[TrainingCase]) -> dict:
    """nnUNet's dataset description; the explicit ``dataset`` listing spares nnUNet a folder scan in a process pool."""
    return {
        "name": "TANQ VS + cochlea on hrT2",
        "channel_names": {"0": CHANNEL_NAME},
        "labels": LABELS | (NNUNET_UNLABELLED if any(case.partial for case in cases) else {}),
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "dataset": {c.case_id: {"images": [_image_file(c.case_id)], "label": _label_file(c.case_id)} for c in cases},
        "tanq_sources": _sources(cases),
    }


def _link_or_copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, tmp)


def check_cases(cases: Sequence[TrainingCase]) -> None:
    """Check every pair and that case ids are unique; raise :class:`DatasetError` naming the first problem."""
    if not cases:
        raise DatasetError("no training cases given")
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise DatasetError(f"case id '{case.case_id}' is given more than once")
        seen.add(case.case_id)
    for case in cases:
        check_case(case)


def write_raw_dataset(folders: NnUNetFolders, cases: Sequence[TrainingCase]) -> bool:
    """Write the raw dataset for ``cases``; return False when an identical one was already complete.

    A work folder holding a dataset built from other sources is refused
    (each training run needs its own work folder).
    """
    target = folders.raw_dataset / "dataset.json"
    wanted = _dataset_json(cases)
    if target.is_file() and json.loads(target.read_text()) == wanted:
        return False
    check_cases(cases)
    if target.is_file():
        raise DatasetError(
            f"'{target}' was written for other training cases or files; use a new work folder for a new dataset"
        )
    for case in cases:
        _link_or_copy(Path(case.image), folders.raw_dataset / _image_file(case.case_id))
        _link_or_copy(Path(case.label), folders.raw_dataset / _label_file(case.case_id))
    write_text_atomic(target, json.dumps(wanted, indent=2))
    return True


def fold_splits(cases: Sequence[TrainingCase], folds: int) -> list[dict[str, list[str]]]:
    """Cross-validation splits by subject: ``folds`` >= 2 gives a k-fold split; 1 gives fold 0 of a 5-fold split (80:20).

    Returns nnUNet's ``splits_final.json`` content: one ``{"train": [...], "val": [...]}`` per fold.
    """
    if folds < 1:
        raise ValueError(f"segment.folds must be >= 1, got {folds}")
    n_splits = folds if folds > 1 else 5
    subjects = sorted({case.subject for case in cases})
    if len(subjects) < n_splits:
        raise DatasetError(
            f"{n_splits}-fold cross-validation needs at least {n_splits} subjects, got {len(subjects)}: {subjects}"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(subjects))
    shuffled = [subjects[i] for i in order]
    splits = []
    for fold in range(folds):
        held_out = set(shuffled[fold::n_splits])
        splits.append(
            {
                "train": sorted(c.case_id for c in cases if c.subject not in held_out),
                "val": sorted(c.case_id for c in cases if c.subject in held_out),
            }
        )
    return splits


def write_splits(folders: NnUNetFolders, splits: list[dict[str, list[str]]]) -> Path:
    """Write :func:`fold_splits` as the preprocessed dataset's ``splits_final.json`` (nnUNet's trainer reads it)."""
    return write_text_atomic(folders.preprocessed_dataset / "splits_final.json", json.dumps(splits, indent=2))
