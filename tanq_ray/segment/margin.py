"""An unlabelled margin around each pseudo-labelled VS, so self-training does not learn where the VS was missed.

A round-0 model trained on pseudo-hrT2 finds the VS of a real hrT2 scan but
often draws only part of it: the part next to the internal auditory canal,
with the rest of a large tumour predicted background
(docs/learning-on-a-cpu.md section 18). Trained on such a pseudo-label as it
is, the next round learns from real hrT2 itself that the outer part of a VS is
background, and draws it smaller still. Within ``margin_mm`` outside the
pseudo-labelled VS the class is therefore left unknown
(:data:`~tanq_ray.labels.UNLABELLED`, nnUNet's ignore label): the round learns
the VS's inside and the background farther out from the real scans, and the
boundary from the pseudo-hrT2 volumes, whose labels are true.

A pseudo-label with no VS at all (the previous round drew none, or the
refinement rules removed what it drew) is wrong about the VS in a cohort
where every scan has one, as in CrossMoDA. Given the source scans'
:class:`~tanq_ray.segment.refine.VsLocationPrior`, every background voxel
where a VS can lie is then left unknown instead of taught as background
(docs/learning-on-a-cpu.md section 22).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from tanq_ray.data.roi import save_nifti
from tanq_ray.io_utils import up_to_date
from tanq_ray.labels import BACKGROUND, UNLABELLED, VS
from tanq_ray.segment.refine import VsLocationPrior, offsets_mm


def with_unlabelled_margin(
    label: np.ndarray, spacing: Sequence[float], margin_mm: float, vs_region: VsLocationPrior | None = None
) -> np.ndarray:
    """``label (X, Y, Z)`` with background voxels within ``margin_mm`` (Euclidean, in mm) of a VS voxel set unlabelled.

    Structures are kept as they are. A label without a VS comes back
    unchanged, or with ``vs_region`` (an ROI volume's label) with every
    background voxel that the region places near a source VS unlabelled.
    """
    if margin_mm <= 0:
        raise ValueError(f"the unlabelled margin must be positive, got {margin_mm} mm")
    vs = label == VS
    result = label.copy()
    if vs.any():
        distance = ndimage.distance_transform_edt(~vs, sampling=[float(s) for s in spacing])
        result[(distance <= margin_mm) & (label == BACKGROUND)] = UNLABELLED
    elif vs_region is not None:
        background = label == BACKGROUND
        near = vs_region.near(offsets_mm(background, spacing))  # argwhere and boolean indexing share C order
        result[background] = np.where(near, UNLABELLED, BACKGROUND)
    return result


def write_with_unlabelled_margin(
    label_path: Path, target: Path, margin_mm: float, vs_region: VsLocationPrior | None = None
) -> Path:
    """Write ``label_path``'s label map with the margin of :func:`with_unlabelled_margin` to ``target`` (atomically).

    A ``target`` newer than ``label_path`` is kept, so a resumed round finds
    the files its nnUNet dataset was built from unchanged.
    """
    if up_to_date(target, label_path):
        return target
    image = nib.load(str(label_path))
    label = np.asarray(image.dataobj).astype(np.uint8)
    marked = with_unlabelled_margin(label, image.header.get_zooms()[:3], margin_mm, vs_region)
    return save_nifti(nib.Nifti1Image(marked, image.affine, image.header), target)
