"""Structures a translation erased are left unlabelled in its pseudo-hrT2 volume.

Why: a pseudo-hrT2 volume carries its source ceT1's labels, true for the
anatomy but not always for the picture. The demo's CycleGAN view draws the
cochlea at no contrast to its surroundings, and either translator can lose a
piece of one (docs/learning-on-a-cpu.md section 27). Labelled as cochlea,
those voxels ask nnUNet to find a structure where the image shows none; on
the same translations, round-0 models trained on them drew less of the VS
as well. Left unlabelled (:data:`~tanq_ray.labels.UNLABELLED`, nnUNet's ignore
label), they teach nothing either way; every visible structure keeps its
label, and the other view of the same subject still shows where it is.

A structure's contrast is measured per connected piece (face-connected
voxels of one label): the mean of the volume's z-scores inside the piece
minus their mean over the background within :data:`RING_PIXELS` in-plane
pixels of it, the same surroundings that
:class:`~tanq_ray.segment.structure_contrast.StructureContrastTransform`
redraws against. A piece below ``min_contrast`` in absolute value is erased.
(:func:`tanq_ray.evaluate.contrast.structure_contrast` scores a whole
structure of a translation against real hrT2, with a ring in 3-D: a
translator's score. Here each piece is judged in nnUNet's 2d slices, where
one faint piece of an otherwise visible cochlea is its own training target.)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from tanq_ray.data.roi import save_nifti
from tanq_ray.evaluate.contrast import z_scores
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


def with_erased_structures_unlabelled(
    image: np.ndarray, label: np.ndarray, spacing: Sequence[float], min_contrast: float
) -> np.ndarray:
    """``label (X, Y, Z)`` with every piece drawn in ``image`` at ``|contrast| < min_contrast`` set unlabelled."""
    if min_contrast <= 0:
        raise ValueError(f"the least contrast of a labelled structure must be positive, got {min_contrast}")
    result = label.copy()
    for _, mask, contrast in structure_pieces(image, label, spacing):
        if abs(contrast) < min_contrast:
            result[mask] = UNLABELLED
    return result


def unlabel_erased_structures(cases: Sequence[TrainingCase], folder: Path, min_contrast: float) -> list[TrainingCase]:
    """Each case with its erased structures unlabelled: a copy of its label under ``folder`` (atomically) where one was.

    A case with nothing erased keeps its label file. A copy newer than both
    the case's image and label is kept, so a resumed round finds the files its
    nnUNet dataset was built from unchanged (the pipeline empties a round's
    folder when its settings, ``min_contrast`` among them, change).
    """
    result = []
    for case in cases:
        target = folder / f"{case.case_id}.nii.gz"
        newest_input = max(case.image.stat().st_mtime_ns, case.label.stat().st_mtime_ns)
        if target.is_file() and target.stat().st_mtime_ns >= newest_input:
            result.append(replace(case, label=target, partial=True))
            continue
        label_image = nib.load(str(case.label))
        label = np.asarray(label_image.dataobj).astype(np.uint8)
        image = np.asarray(nib.load(str(case.image)).dataobj, dtype=np.float32)
        if image.shape != label.shape:
            raise DatasetError(
                f"case '{case.case_id}': label '{case.label}' has shape {label.shape}, its image '{case.image}' {image.shape}"
            )
        marked = with_erased_structures_unlabelled(image, label, label_image.header.get_zooms()[:3], min_contrast)
        if np.array_equal(marked, label):
            result.append(case)
            continue
        save_nifti(nib.Nifti1Image(marked, label_image.affine, label_image.header), target)
        result.append(replace(case, label=target, partial=True))
    return result
