"""Overlap and surface-distance metrics of one binary mask against its truth (paper §4).

Both functions take two boolean arrays of the same shape, e.g. ``(X, Y, Z)``
volumes of one class. Conventions for empty masks:

* :func:`dice`: both empty -> 1.0 (perfect agreement on absence); exactly one
  empty -> 0.0.
* :func:`assd`: both empty -> 0.0; exactly one empty -> NaN, because a
  distance to a surface that does not exist is undefined. Callers exclude NaN
  from means and count such cases (see :mod:`tanq_ray.evaluate.scoring`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

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
    """Dice overlap ``2 |P ∩ T| / (|P| + |T|)`` of two same-shape boolean masks, in [0, 1]."""
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


def assd(prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Average symmetric surface distance in mm between two same-shape boolean masks.

    ``spacing`` is the voxel size in mm along each array axis. With surfaces
    S_P and S_T (:func:`surface`) and d(v, S) the Euclidean distance from voxel
    v to the nearest voxel of S::

        ASSD = (sum_{p in S_P} d(p, S_T) + sum_{t in S_T} d(t, S_P)) / (|S_P| + |S_T|)

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
        return float("nan")
    box = _joint_bounding_box(prediction, truth)
    prediction_surface, truth_surface = surface(prediction[box]), surface(truth[box])
    sampling = tuple(float(s) for s in spacing)
    to_truth = ndimage.distance_transform_edt(~truth_surface, sampling=sampling)
    to_prediction = ndimage.distance_transform_edt(~prediction_surface, sampling=sampling)
    total = float(to_truth[prediction_surface].sum()) + float(to_prediction[truth_surface].sum())
    return total / int(prediction_surface.sum() + truth_surface.sum())
