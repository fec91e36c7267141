"""Structures a translation erased: left unlabelled in its pseudo-hrT2 volume, or redrawn where the label says they are.

Why: a pseudo-hrT2 volume carries its source ceT1's labels, true for the
anatomy but not always for the picture. The demo's CycleGAN view draws the
cochlea at no contrast to its surroundings, and either translator can lose a
piece of one (docs/learning-on-a-cpu.md section 27). Labelled as cochlea,
those voxels ask nnUNet to find a structure where the image shows none; on
the same translations, round-0 models trained on them drew less of the VS
as well. Two ways out:

- ``"unlabelled"``: the piece is set to :data:`~tanq_ray.labels.UNLABELLED`
  (nnUNet's ignore label) and teaches nothing either way. Where both views
  erase most of the cochlea, little is left to learn it from.
- ``"redrawn"``: the piece keeps its label and its mean is moved to a
  contrast drawn from the visible part of ``segment.structure_contrast``,
  the redraw :class:`~tanq_ray.segment.structure_contrast.StructureContrastTransform`
  makes in half of the patches, here made once in the volume (so in
  standard deviations of the volume, not of a patch) and the piece is never
  shown invisible (docs/learning-on-a-cpu.md section 28). Texture inside
  the piece and everything outside it are kept. Measured and left off in
  ``configs/tiny.yaml``: round 0 drew more cochlea, the final row less.

A structure's contrast is measured per connected piece (face-connected
voxels of one label): the mean of the volume's z-scores inside the piece
minus their mean over the background within :data:`RING_PIXELS` in-plane
pixels of it, the same surroundings the augmentation redraws against. A
piece below ``min_contrast`` in absolute value is erased.
(:func:`tanq_ray.evaluate.contrast.structure_contrast` scores a whole
structure of a translation against real hrT2, with a ring in 3-D: a
translator's score. Here each piece is judged in nnUNet's 2d slices, where
one faint piece of an otherwise visible cochlea is its own training target.)
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from tanq_ray.config import ErasedTreatment
from tanq_ray.data.roi import save_nifti
from tanq_ray.evaluate.contrast import z_scores
from tanq_ray.io_utils import up_to_date
from tanq_ray.labels import BACKGROUND, COCHLEA, UNLABELLED, VS
from tanq_ray.segment.dataset import DatasetError, TrainingCase

RING_PIXELS = 2
"""Width of the in-plane band of background around a structure that is its surroundings."""

def structure_pieces(
    image: np.ndarray, label: np.ndarray, spacing: Sequence[float]
) -> Iterator[tuple[int, np.ndarray, float]]:
    """``image, label (X, Y, Z)`` -> ``(structure, mask, contrast)`` for each connected piece of a VS or cochlea.

    ``contrast`` is in standard deviations of the whole volume; the ring lies
    in the plane of the two finer axes of ``spacing`` (nnUNet's 2d slices).
    """
    if image.shape != label.shape:
        raise ValueError(f"image shape {image.shape} and label shape {label.shape} differ")
    z = z_scores(image)
    band = [2 * RING_PIXELS + 1] * 3
    band[int(np.argmax(spacing))] = 1
    background = label == BACKGROUND
    for structure in (VS, COCHLEA):
        pieces, count = ndimage.label(label == structure)
        for index in range(1, count + 1):
            mask = pieces == index
            ring = ndimage.binary_dilation(mask, np.ones(band, dtype=bool)) & background
            if not ring.any():
                continue
            yield structure, mask, float(z[mask].mean() - z[ring].mean())


def erased_pieces(
    image: np.ndarray, label: np.ndarray, spacing: Sequence[float], min_contrast: float
) -> list[tuple[np.ndarray, float]]:
    """``(mask, contrast)`` of each piece of :func:`structure_pieces` drawn at ``|contrast| < min_contrast``."""
    if min_contrast <= 0:
        raise ValueError(f"the least contrast of a labelled structure must be positive, got {min_contrast}")
    return [(mask, contrast) for _, mask, contrast in structure_pieces(image, label, spacing) if abs(contrast) < min_contrast]


def with_erased_structures_unlabelled(
    image: np.ndarray, label: np.ndarray, spacing: Sequence[float], min_contrast: float
) -> np.ndarray:
    """``label (X, Y, Z)`` with every piece drawn in ``image`` at ``|contrast| < min_contrast`` set unlabelled."""
    return _unlabelled(label, erased_pieces(image, label, spacing, min_contrast))


def _unlabelled(label: np.ndarray, pieces: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    result = label.copy()
    for mask, _ in pieces:
        result[mask] = UNLABELLED
    return result


def visible_contrast(contrast: tuple[float, float], min_contrast: float, rng: np.random.Generator) -> float:
    """A draw from the uniform distribution on ``[low, high]`` without ``(-min_contrast, min_contrast)``."""
    low, high = contrast
    if low == high and abs(low) >= min_contrast:
        return low
    darker = (low, min(high, -min_contrast))
    brighter = (max(low, min_contrast), high)
    lengths = [max(0.0, end - start) for start, end in (darker, brighter)]
    if sum(lengths) == 0:
        raise ValueError(f"contrast range {list(contrast)} has no value at least {min_contrast} from 0")
    position = rng.uniform(0.0, sum(lengths))
    return darker[0] + position if position < lengths[0] else brighter[0] + position - lengths[0]


def with_erased_structures_redrawn(
    image: np.ndarray,
    label: np.ndarray,
    spacing: Sequence[float],
    min_contrast: float,
    contrast: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """``image (X, Y, Z)`` with every erased piece's mean moved to a :func:`visible_contrast` above its ring's."""
    return _redrawn(image, erased_pieces(image, label, spacing, min_contrast), min_contrast, contrast, rng)


def _redrawn(
    image: np.ndarray,
    pieces: Sequence[tuple[np.ndarray, float]],
    min_contrast: float,
    contrast: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    result = image.astype(np.float32, copy=True)
    scale = float(image.std())  # contrasts are in standard deviations of the volume
    for mask, measured in pieces:
        result[mask] += (visible_contrast(contrast, min_contrast, rng) - measured) * scale
    return result


def _case_seed(case_id: str) -> int:
    """The same draws for a case in every run and process (Python's ``hash`` of a string is salted)."""
    return zlib.crc32(case_id.encode())


def treat_erased_structures(
    cases: Sequence[TrainingCase],
    folder: Path,
    min_contrast: float,
    treatment: ErasedTreatment = "unlabelled",
    contrast: tuple[float, float] | None = None,
) -> list[TrainingCase]:
    """Each case with its erased structures unlabelled (a partial copy of its label) or redrawn (a copy of its image).

    Copies go under ``folder``, written atomically; a case with nothing erased
    keeps its files. ``contrast`` is the range a redrawn piece's contrast is
    drawn from. A copy newer than both the case's image and label is kept, so
    a resumed round finds the files its nnUNet dataset was built from
    unchanged (the pipeline empties a round's folder when its settings,
    ``min_contrast`` and the treatment among them, change).
    """
    if treatment == "redrawn" and contrast is None:
        raise ValueError("redrawing erased structures needs the contrast range to draw from")
    result = []
    for case in cases:
        target = folder / f"{case.case_id}.nii.gz"
        if up_to_date(target, case.image, case.label):
            result.append(_with_copy(case, target, treatment))
            continue
        label_file, image_file = nib.load(str(case.label)), nib.load(str(case.image))
        label = np.asarray(label_file.dataobj).astype(np.uint8)
        image = np.asarray(image_file.dataobj, dtype=np.float32)
        if image.shape != label.shape:
            raise DatasetError(
                f"case '{case.case_id}': label '{case.label}' has shape {label.shape}, its image '{case.image}' {image.shape}"
            )
        pieces = erased_pieces(image, label, label_file.header.get_zooms()[:3], min_contrast)
        if not pieces:
            result.append(case)
            continue
        if treatment == "unlabelled":
            copy = nib.Nifti1Image(_unlabelled(label, pieces), label_file.affine, label_file.header)
        else:
            rng = np.random.default_rng(_case_seed(case.case_id))
            copy = nib.Nifti1Image(_redrawn(image, pieces, min_contrast, contrast, rng), image_file.affine, image_file.header)
            copy.set_data_dtype(np.float32)
        save_nifti(copy, target)
        result.append(_with_copy(case, target, treatment))
    return result


def _with_copy(case: TrainingCase, copy: Path, treatment: ErasedTreatment) -> TrainingCase:
    return replace(case, label=copy, partial=True) if treatment == "unlabelled" else replace(case, image=copy)
