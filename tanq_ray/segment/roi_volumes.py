"""The segmenter's side of the region of interest: cut volumes to their ROI, segment ROIs, paste predictions back.

nnUNet trains and predicts only on ROI volumes (:mod:`tanq_ray.data.roi`).
:func:`cut_rois` cuts full-size volumes (and labels) as Ray tasks, one per
volume; :func:`segment_rois` predicts the ROI volumes and writes each label
map twice: on the ROI grid (what a later round trains on) and pasted back
onto the input's full original grid, background outside (what a user opens
beside the scan, and what is scored).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import ray

from tanq_ray.config import IngestConfig
from tanq_ray.data.roi import RoiCase, cut_roi, paste_back, read_geometry, save_nifti
from tanq_ray.io_utils import up_to_date
from tanq_ray.segment.predict import predict_volumes
from tanq_ray.segment.segmenter import Segmenter

ROI_FOLDER = "roi"
"""Subfolder of a prediction folder holding the predictions on the ROI grid."""


@dataclass(frozen=True)
class VolumeToCut:
    """A full-size volume (and optional label on its grid) to cut to its ROI."""

    case_id: str
    image: Path
    label: Path | None = None


def cut_rois(volumes: Sequence[VolumeToCut], settings: IngestConfig, out_dir: Path) -> list[RoiCase]:
    """Cut every volume to its ROI under ``out_dir`` (one Ray task each; volumes already cut are kept)."""
    if not volumes:
        return []
    task = ray.remote(cut_roi).options(num_cpus=1, name="cut_roi")
    refs = [task.remote(v.case_id, v.image, v.label, settings, Path(out_dir)) for v in volumes]
    return list(ray.get(refs))


def segment_rois(
    segmenter: Segmenter, cases: Sequence[RoiCase], out_dir: Path, save_probabilities: bool = False
) -> dict[str, Path]:
    """Segment ROI volumes; write ``out_dir/roi/<case>.nii.gz`` and the pasted-back ``out_dir/<case>.nii.gz``.

    Returns case id -> ROI prediction (with ``save_probabilities``, its
    softmax ``.npz`` lies beside it, see :mod:`tanq_ray.segment.predict`).
    Full-size files already written are kept.
    """
    out_dir = Path(out_dir)
    on_roi = predict_volumes(segmenter, [(c.case_id, c.image) for c in cases], out_dir / ROI_FOLDER, save_probabilities=save_probabilities)
    for case in cases:
        paste_back_file(on_roi[case.case_id], case, out_dir / f"{case.case_id}.nii.gz")
    return on_roi


def paste_back_file(roi_label: Path, case: RoiCase, target: Path) -> Path:
    """Write the ROI label map ``roi_label`` of ``case`` onto its source volume's full grid at ``target``."""
    if up_to_date(target, roi_label):
        return target
    array = np.asarray(nib.load(str(roi_label)).dataobj)
    return save_nifti(paste_back(array, read_geometry(case.geometry)), target)
