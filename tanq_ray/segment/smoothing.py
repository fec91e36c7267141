"""In-plane binomial smoothing of pseudo-hrT2 volumes: the translators' checkerboard removed before nnUNet learns it.

Why: without anti-aliased sampling (``models.<translator>.antialias: false``:
the tiny configuration's TANQ, for time, and CycleGAN by default) a
translator upsamples with stride-2 transposed convolutions, which print a
checkerboard into every slice it draws. Real hrT2 has none: on the demo's
cohort the power on the Nyquist row and column of a slice's spectrum was
8-10 times real hrT2's (docs/learning-on-a-cpu.md section 32). A segmenter
trained on the translations can take that texture for part of what an
hrT2 looks like.
The ``[1, 2, 1] / 4`` filter along each in-plane axis has a zero at the
Nyquist frequency, so it removes the checkerboard exactly, and keeps a
constant and a linear ramp as they are.

In-plane means the two finer axes of the voxel spacing, the plane of
nnUNet's 2d slices; the coarse axis is not touched.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from tanq_ray.data.roi import save_nifti
from tanq_ray.io_utils import up_to_date
from tanq_ray.segment.dataset import TrainingCase

BINOMIAL = np.array([0.25, 0.5, 0.25])
"""The ``[1, 2, 1] / 4`` kernel: zero response at the Nyquist frequency, unit response at zero frequency."""


def smooth_in_plane(image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``image (X, Y, Z)`` filtered with :data:`BINOMIAL` along the two finer axes of ``spacing`` (mirrored at the edges), float32."""
    if image.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"expected a 3-D volume and 3 spacings, got shape {image.shape} and spacing {tuple(spacing)}")
    coarse = int(np.argmax(spacing))
    result = np.asarray(image, dtype=np.float32)
    for axis in range(3):
        if axis != coarse:
            result = ndimage.convolve1d(result, BINOMIAL, axis=axis, mode="mirror")
    return result


def smoothed_cases(cases: Sequence[TrainingCase], folder: Path) -> list[TrainingCase]:
    """Each case with its image replaced by a :func:`smooth_in_plane` copy under ``folder`` (written atomically).

    A copy newer than the case's image is kept, so a resumed round finds the
    files its nnUNet dataset was built from unchanged.
    """
    result = []
    for case in cases:
        target = folder / f"{case.case_id}.nii.gz"
        if not up_to_date(target, case.image):
            image = nib.load(str(case.image))
            smoothed = smooth_in_plane(np.asarray(image.dataobj), image.header.get_zooms()[:3])
            copy = nib.Nifti1Image(smoothed, image.affine, image.header)
            copy.set_data_dtype(np.float32)
            save_nifti(copy, target)
        result.append(replace(case, image=target))
    return result
