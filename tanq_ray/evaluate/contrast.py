"""How a structure stands out from its surroundings: a cheap score of translations, computed in seconds.

nnUNet z-scores each MR volume before it learns, so what a translation hands
it about a structure is the structure's z-score relative to the tissue around
it. :func:`structure_contrast` measures that for one volume (mean z-score
inside the structure minus the mean in a ring around it); comparing the mean
over pseudo-hrT2 volumes with the mean over real hrT2 volumes (:func:`contrast_gaps`)
says whether the translations render a structure as real hrT2 shows it —
the paper's motivation for target-aware normalisation (the VS too bright, the
cochlea washed out). docs/learning-on-a-cpu.md (section 7) measured it by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator

import nibabel as nib
import numpy as np
from scipy import ndimage

from tanq_ray.labels import METRIC_NAMES

RING_VOXELS = 2
"""Width of the ring around a structure that counts as its surroundings."""


def structure_contrast(image: np.ndarray, label: np.ndarray, value: int, ring_voxels: int = RING_VOXELS) -> float:
    """Mean z-score inside ``label == value`` minus the mean in a ring ``ring_voxels`` wide around it; NaN if absent.

    ``image`` and ``label`` have the same shape (e.g. ``(X, Y, Z)``); the
    z-score is over the whole image, as nnUNet normalises MR volumes.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.shape != np.shape(label):
        raise ValueError(f"image shape {image.shape} differs from label shape {np.shape(label)}")
    inside = np.asarray(label) == value
    if not inside.any():
        return math.nan
    ring = ndimage.binary_dilation(inside, iterations=ring_voxels) & ~inside
    z = z_scores(image)
    return float(z[inside].mean() - z[ring].mean())


def z_scores(image: np.ndarray) -> np.ndarray:
    """``image`` in standard deviations from its mean, as nnUNet normalises an MR volume (a flat image: minus its mean)."""
    image = np.asarray(image, dtype=np.float64)
    std = image.std()
    return (image - image.mean()) / (std if std > 0 else 1.0)


def mean_contrasts(volumes: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Mean :func:`structure_contrast` per structure (``{"vs": .., "cochlea": ..}``) over ``(image, label)`` arrays.

    Volumes without a structure do not count for it; NaN when none has it.
    """
    values: dict[str, list[float]] = {name: [] for name in METRIC_NAMES.values()}
    for image, label in volumes:
        for value, name in METRIC_NAMES.items():
            contrast = structure_contrast(image, label, value)
            if not math.isnan(contrast):
                values[name].append(contrast)
    return {name: float(np.mean(found)) if found else math.nan for name, found in values.items()}


def read_volumes(files: Iterable[tuple[Path, Path]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image, label)`` NIfTI file pairs -> ``(image, label)`` arrays, one pair at a time."""
    for image_path, label_path in files:
        yield np.asarray(nib.load(str(image_path)).dataobj, dtype=np.float32), np.asarray(nib.load(str(label_path)).dataobj)


def contrast_gaps(translated: dict[str, float], real: dict[str, float]) -> dict[str, float]:
    """``{"<structure>_contrast_gap": |translated - real|}``: 0 = the translations render the structure as real hrT2 does."""
    return {f"{name}_contrast_gap": abs(translated[name] - real[name]) for name in real}
