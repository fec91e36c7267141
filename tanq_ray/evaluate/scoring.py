"""Score predicted label volumes against ground truth: per case, then summarised (paper §4).

Per case and class (VS = 1, cochlea = 2) we compute Dice and ASSD (mm, from
the NIfTI voxel size) under a :class:`~tanq_ray.evaluate.metrics.ScoringConvention`,
by default the challenge's (:data:`~tanq_ray.evaluate.metrics.CROSSMODA`).
:func:`evaluate_folder` writes ``per_case.csv`` (one row per case) and
``summary.json`` (the convention's name, means and standard deviations over
cases). A NaN ASSD (undefined: under ``pooled``, exactly one of prediction and
truth is empty) is left out of the ASSD mean and counted in
``<assd metric>_undefined``; under ``crossmoda`` no ASSD is undefined.

Folder layout: a file ``<case>_Label.nii.gz`` or ``<case>.nii.gz`` (nnUNet's
prediction name) is the label volume of ``<case>``, in either folder. Image
files (``<case>_ceT1.nii.gz``, ``<case>_hrT2.nii.gz``) are skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from tanq_ray.evaluate.metrics import CROSSMODA, ScoringConvention, assd, dice
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.labels import METRIC_NAMES, VALUES
from tanq_ray.tables import Table

log = logging.getLogger(__name__)

CLASSES: dict[str, int] = {name: value for value, name in METRIC_NAMES.items()}
DICE_METRICS = tuple(f"dice_{name}" for name in CLASSES)
ASSD_METRICS = tuple(f"assd_{name}" for name in CLASSES)
METRICS = DICE_METRICS + ASSD_METRICS
PER_CASE_COLUMNS = ("case_id",) + METRICS
LABEL_VALUES = VALUES
AFFINE_TOLERANCE_MM = 1e-3
_NIFTI = ".nii.gz"
_LABEL_SUFFIX = "_Label"
_IMAGE_SUFFIXES = ("_ceT1", "_hrT2")


class EvaluationError(ValueError):
    """The predictions or ground truth cannot be scored; the message names the files."""


@dataclass(frozen=True)
class Evaluation:
    """Scores of one prediction folder: rows of ``per_case.csv``, the numbers of ``summary.json`` and their convention.

    ``summary`` holds only numbers (callers log it as metrics); a mean with no
    defined case is NaN here and ``null`` in the JSON file, which also records
    ``convention.name`` under the key ``"convention"``.
    """

    per_case: list[dict[str, Any]]
    summary: dict[str, float | int]
    per_case_path: Path
    summary_path: Path
    convention: ScoringConvention


def case_id_of(path: str | Path) -> str:
    """``.../crossmoda2022_etz_12_Label.nii.gz`` or ``.../crossmoda2022_etz_12.nii.gz`` -> ``crossmoda2022_etz_12``."""
    stem = Path(path).name.removesuffix(_NIFTI)
    return stem.removesuffix(_LABEL_SUFFIX)


def _read_label(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """A 3-D label volume ``(X, Y, Z)`` with values in {0, 1, 2}, plus its NIfTI image (for header and affine)."""
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel raises many types for damaged files; all mean "unreadable"
        raise EvaluationError(f"{path}: cannot be read as NIfTI ({type(err).__name__}: {err})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise EvaluationError(f"{path}: expected a 3-D label volume, got shape {tuple(data.shape)}")
    unexpected = np.isin(data, LABEL_VALUES, invert=True)
    if unexpected.any():
        shown = np.unique(data[unexpected])[:5].tolist()
        raise EvaluationError(f"{path}: label values must be in {set(LABEL_VALUES)}, found {shown}")
    return data, image


def score_case(
    prediction_path: str | Path, truth_path: str | Path, convention: ScoringConvention = CROSSMODA
) -> dict[str, Any]:
    """Dice and ASSD (mm, under ``convention``) per class for one case: keys ``case_id`` and :data:`METRICS`.

    Both files must have the same shape and the same affine (to 1e-3); the
    voxel size for ASSD is taken from the truth header's zooms.
    """
    prediction_path, truth_path = Path(prediction_path), Path(truth_path)
    prediction, prediction_image = _read_label(prediction_path)
    truth, truth_image = _read_label(truth_path)
    if prediction.shape != truth.shape:
        raise EvaluationError(
            f"prediction '{prediction_path}' has shape {prediction.shape} but truth '{truth_path}' has {truth.shape}"
        )
    if not np.allclose(prediction_image.affine, truth_image.affine, atol=AFFINE_TOLERANCE_MM):
        raise EvaluationError(
            f"prediction '{prediction_path}' and truth '{truth_path}' have different affines (tolerance "
            f"{AFFINE_TOLERANCE_MM}): the prediction is not on the truth's voxel grid"
        )
    spacing = tuple(float(z) for z in truth_image.header.get_zooms()[:3])
    scores: dict[str, Any] = {"case_id": case_id_of(truth_path)}
    for name, value in CLASSES.items():
        predicted, true = prediction == value, truth == value
        scores[f"dice_{name}"] = dice(predicted, true)
        scores[f"assd_{name}"] = assd(predicted, true, spacing, convention)  # type: ignore[arg-type]
    return scores


def metric_value(row: dict[str, Any], metric: str) -> float:
    """A metric of one per-case row; ``dice_mean`` is the mean of the class Dice scores."""
    if metric == "dice_mean":
        return float(np.mean([row[name] for name in DICE_METRICS]))
    if metric not in METRICS:
        raise KeyError(f"unknown metric '{metric}'; expected one of {list(METRICS) + ['dice_mean']}")
    return float(row[metric])


def summarize(per_case: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """Means and population standard deviations over cases, ignoring NaN (undefined ASSD), whatever the convention.

    Keys: each of :data:`METRICS` and ``dice_mean`` with a ``_std`` twin,
    ``n_cases``, and ``<assd metric>_undefined`` (cases where ASSD is NaN).
    """
    if not per_case:
        raise ValueError("cannot summarise zero cases")
    summary: dict[str, float | int] = {}
    for metric in METRICS + ("dice_mean",):
        values = np.array([metric_value(row, metric) for row in per_case], dtype=float)
        defined = values[~np.isnan(values)]
        summary[metric] = float(defined.mean()) if defined.size else math.nan
        summary[f"{metric}_std"] = float(defined.std()) if defined.size else math.nan
    summary["n_cases"] = len(per_case)
    for metric in ASSD_METRICS:
        summary[f"{metric}_undefined"] = sum(math.isnan(float(row[metric])) for row in per_case)
    return summary


def _label_files(folder: Path, role: str) -> dict[str, Path]:
    """Map case id -> label file for every ``<case>_Label.nii.gz`` / ``<case>.nii.gz`` in ``folder``."""
    if not folder.is_dir():
        raise EvaluationError(f"{role} folder '{folder}' does not exist or is not a directory")
    files: dict[str, Path] = {}
    for path in sorted(folder.glob(f"*{_NIFTI}")):
        hidden = path.name.startswith(".")  # e.g. an unfinished atomic write
        if hidden or path.name.removesuffix(_NIFTI).endswith(_IMAGE_SUFFIXES):
            continue
        case = case_id_of(path)
        if case in files:
            raise EvaluationError(f"{role} folder '{folder}' has two files for case '{case}': {files[case].name}, {path.name}")
        files[case] = path
    return files


def _match_cases(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """(prediction, truth) pairs for every ground-truth case, sorted by case id."""
    truths = _label_files(gt_dir, "ground-truth")
    if not truths:
        raise EvaluationError(f"ground-truth folder '{gt_dir}' holds no '<case>_Label{_NIFTI}' or '<case>{_NIFTI}' file")
    predictions = _label_files(pred_dir, "prediction")
    missing = sorted(set(truths) - set(predictions))
    if missing:
        raise EvaluationError(
            f"prediction folder '{pred_dir}' lacks {len(missing)} of {len(truths)} ground-truth cases: {', '.join(missing)}"
        )
    extra = sorted(set(predictions) - set(truths))
    if extra:
        log.warning("ignoring %d predictions in '%s' without ground truth: %s", len(extra), pred_dir, ", ".join(extra))
    return [(predictions[case], truths[case]) for case in sorted(truths)]


def _score_all(pairs: list[tuple[Path, Path]], parallel: bool, convention: ScoringConvention) -> list[dict[str, Any]]:
    """Score every pair: one Ray task per case when Ray is running and ``parallel``, else in this process."""
    if parallel:
        import ray

        if ray.is_initialized():
            task = ray.remote(score_case).options(num_cpus=1)
            return ray.get([task.remote(prediction, truth, convention) for prediction, truth in pairs])
    return [score_case(prediction, truth, convention) for prediction, truth in pairs]


def _json_number(value: float | int) -> float | int | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def evaluate_folder(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path | None = None,
    parallel: bool = True,
    convention: ScoringConvention = CROSSMODA,
) -> Evaluation:
    """Score every ground-truth case against its prediction under ``convention``; write ``per_case.csv`` and ``summary.json``.

    Every case in ``gt_dir`` needs a prediction in ``pred_dir`` (else
    :class:`EvaluationError` listing the missing ids); predictions without
    truth are ignored with a warning. Both files go to ``out_dir`` (default
    ``pred_dir``), written atomically.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    out_dir = Path(out_dir) if out_dir is not None else pred_dir
    per_case = _score_all(_match_cases(pred_dir, gt_dir), parallel, convention)
    summary = summarize(per_case)
    per_case_path = write_text_atomic(out_dir / "per_case.csv", Table(PER_CASE_COLUMNS, per_case).csv())
    recorded = {"convention": convention.name} | {key: _json_number(value) for key, value in summary.items()}
    summary_path = write_text_atomic(out_dir / "summary.json", json.dumps(recorded, indent=2) + "\n")
    return Evaluation(
        per_case=per_case, summary=summary, per_case_path=per_case_path, summary_path=summary_path, convention=convention
    )


def load_per_case(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``per_case.csv`` back: ``case_id`` as text, metrics as floats (empty cell -> NaN)."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in PER_CASE_COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise EvaluationError(f"{path}: missing columns {missing}; expected {list(PER_CASE_COLUMNS)}")
            rows = list(reader)
    except OSError as err:
        raise EvaluationError(f"{path}: cannot be read ({err.strerror})") from None
    per_case = []
    for line, row in enumerate(rows, start=2):
        parsed: dict[str, Any] = {"case_id": row["case_id"]}
        for metric in METRICS:
            cell = row[metric]
            if cell is None:
                raise EvaluationError(f"{path}, line {line}: too few cells, expected {list(PER_CASE_COLUMNS)}")
            try:
                parsed[metric] = float(cell) if cell else math.nan
            except ValueError:
                raise EvaluationError(f"{path}, line {line}: column '{metric}' is '{cell}', expected a number") from None
        per_case.append(parsed)
    return per_case
