"""Overlap and surface-distance metrics of one binary mask against its truth (paper §4).

Both functions take two boolean arrays of the same shape, e.g. ``(X, Y, Z)``
volumes of one class. :func:`assd` follows a :class:`ScoringConvention`; the
default, :data:`CROSSMODA`, scores the way the CrossMoDA challenge does, so our
numbers compare with the paper's and the leaderboard's. Empty masks:

* :func:`dice` (every convention): both empty -> 1.0; exactly one empty -> 0.0.
* :func:`assd`: both empty -> 0.0; exactly one empty ->
  :data:`CROSSMODA_EMPTY_PREDICTION_ASSD_MM` under :data:`CROSSMODA`, NaN
  (undefined: callers leave it out of means and count it, see
  :mod:`tanq_ray.evaluate.scoring`) under :data:`POOLED`.

The challenge never meets an empty truth (every case holds both structures);
the rules above for that case are ours, see ``docs/evaluation.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CROSSMODA_EMPTY_PREDICTION_ASSD_MM = 350.0
"""ASSD in mm charged when a structure is present but its prediction is empty.

This is ``MAX_VALUE_ASSD`` of the CrossMoDA 2022 organisers' evaluation code
(``scores.py``). :data:`CROSSMODA` charges it as well when only the truth is
empty (a structure predicted where there is none), which the challenge never scores.
"""


@dataclass(frozen=True)
class ScoringConvention:
    """How :func:`assd` combines its two directions and scores a surface that only one mask has.

    ``mean_of_directions``: true -> the mean of the two directed average
    distances, as medpy's ``assd`` (which the challenge uses) computes it;
    false -> every surface voxel's distance pooled into one mean, which weights
    the direction with the larger surface more. ``one_empty_assd_mm`` is the
    ASSD when exactly one mask is empty; NaN means undefined.
    """

    name: str
    mean_of_directions: bool
    one_empty_assd_mm: float


CROSSMODA = ScoringConvention("crossmoda", mean_of_directions=True, one_empty_assd_mm=CROSSMODA_EMPTY_PREDICTION_ASSD_MM)
"""The challenge's scoring and our default: numbers comparable with the paper and the leaderboard."""
POOLED = ScoringConvention("pooled", mean_of_directions=False, one_empty_assd_mm=math.nan)
"""This project's earlier scoring, kept to compare with results computed before the switch."""
CONVENTIONS: dict[str, ScoringConvention] = {convention.name: convention for convention in (CROSSMODA, POOLED)}


def scoring_convention(name: str) -> ScoringConvention:
    """The convention called ``name`` (as a config or command line spells it)."""
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"unknown scoring convention '{name}'; expected one of {sorted(CONVENTIONS)}") from None


# Voxels kept around the masks' joint bounding box. Erosion treats everything
# outside the array as background, so the cropped result equals the full one.
CROP_MARGIN = 1


def _check_masks(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    return prediction, truth


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap ``2 |P ∩ T| / (|P| + |T|)`` of two same-shape boolean masks, in [0, 1].

    Both masks empty -> 1.0: absence correctly predicted is perfect agreement.
    medpy's ``dc`` (the challenge's Dice) returns 0.0 there, from the 0 / 0 it
    catches; the challenge never meets that case, so following it would only
    punish a correct prediction.
    """
    prediction, truth = _check_masks(prediction, truth)
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask: the mask minus its 6-connected erosion (same shape)."""
    connectivity = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=connectivity, border_value=0)


def _joint_bounding_box(prediction: np.ndarray, truth: np.ndarray) -> tuple[slice, ...]:
    occupied = np.argwhere(prediction | truth)
    low = np.maximum(occupied.min(axis=0) - CROP_MARGIN, 0)
    high = np.minimum(occupied.max(axis=0) + 1 + CROP_MARGIN, prediction.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def assd(
    prediction: np.ndarray,
    truth: np.ndarray,
    spacing: tuple[float, float, float],
    convention: ScoringConvention = CROSSMODA,
) -> float:
    """Average symmetric surface distance in mm between two same-shape boolean masks.

    ``spacing`` is the voxel size in mm along each array axis. With surfaces
    S_P and S_T (:func:`surface`) and d(v, S) the Euclidean distance from voxel
    v to the nearest voxel of S, ``convention`` chooses between::

        mean of directions:  ASSD = (mean_{p in S_P} d(p, S_T) + mean_{t in S_T} d(t, S_P)) / 2
        pooled:              ASSD = (sum_{p in S_P} d(p, S_T) + sum_{t in S_T} d(t, S_P)) / (|S_P| + |S_T|)

    and sets the value when exactly one mask is empty (see the module docstring).
    Distances come from a Euclidean distance transform on the joint bounding
    box of both masks (plus :data:`CROP_MARGIN`), so the cost follows the
    structures' size rather than the volume's.
    """
    prediction, truth = _check_masks(prediction, truth)
    if len(spacing) != prediction.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing must be {prediction.ndim} positive voxel sizes in mm, got {tuple(spacing)}")
    has_prediction, has_truth = bool(prediction.any()), bool(truth.any())
    if not has_prediction and not has_truth:
        return 0.0
    if has_prediction != has_truth:
        return convention.one_empty_assd_mm
    box = _joint_bounding_box(prediction, truth)
    prediction_surface, truth_surface = surface(prediction[box]), surface(truth[box])
    sampling = tuple(float(s) for s in spacing)
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=sampling)[prediction_surface]
    to_prediction = ndimage.distance_transform_edt(~prediction_surface, sampling=sampling)[truth_surface]
    if convention.mean_of_directions:
        return (float(to_truth.mean()) + float(to_prediction.mean())) / 2
    return (float(to_truth.sum()) + float(to_prediction.sum())) / (to_truth.size + to_prediction.size)
