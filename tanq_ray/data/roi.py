"""The region of interest (ROI): one box in mm, from ingest to prediction.

The translators learn on the axial crop that ingest cuts (``ingest.spacing``,
``ingest.crop_size`` voxels in-plane around the volume's centre moved by
``ingest.roi_shift_mm``, every axial slice, resized to ``ingest.image_size``).
The segmenter must train and predict on that same region: a model trained on
one field of view and intensity normalisation and applied to another learns
nothing that transfers. So every volume nnUNet sees — pseudo-hrT2, ceT1 (the
source-only row), real hrT2 to pseudo-label, evaluation hrT2 — is first cut
to its ROI volume here, and every prediction is pasted back onto its input's
full original grid (background outside) before it is written for the user
or scored.

An ROI volume is the stack of a volume's ingest slices as a NIfTI file:
array ``(X, Y, Z)`` = ``(image_size, image_size, slices)`` in RAS+ order, with
the affine that places it in the scanner's world, so it overlays the source
in any viewer. Image intensities are the ingest window's [-1, 1] mapped to
:data:`ROI_INTENSITY_RANGE` (0 to 1000), the same scale as the translators'
pseudo-hrT2: nnUNet z-scores each MR volume anyway, and padding outside the
field of view is 0 in every case. :func:`plan_roi` is the one place that
decides the box; ingest, translate, segment and predict all call it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tanq_ray.config import IngestConfig
from tanq_ray.data.geometry import SliceGeometry, plan_geometry, slices_to_volume, volume_to_slices
from tanq_ray.data.volume import Volume, check_pair, load_volume
from tanq_ray.io_utils import atomic_path, write_text_atomic

ROI_INTENSITY_RANGE = (0.0, 1000.0)
GEOMETRY_SUFFIX = ".roi.json"
ROI_SETTINGS = ("spacing", "crop_size", "image_size", "percentiles", "roi_shift_mm")
"""The ingest settings that decide an ROI volume (and so an ingest shard)."""


def plan_roi(volume: Volume, settings: IngestConfig) -> SliceGeometry:
    """The ROI of one volume under the ingest settings (grid, crop box, intensity window)."""
    return plan_geometry(
        volume, settings.spacing, settings.crop_size, settings.image_size, settings.percentiles, settings.roi_shift_mm
    )


def roi_intensities(normalised: np.ndarray) -> np.ndarray:
    """Intensities in [-1, 1] (ingest window or generator output) -> :data:`ROI_INTENSITY_RANGE`, linearly."""
    low, high = ROI_INTENSITY_RANGE
    return ((np.asarray(normalised, dtype=np.float32) + 1.0) / 2.0 * (high - low) + low).astype(np.float32)


def roi_affine(geometry: SliceGeometry) -> np.ndarray:
    """Voxel -> world (mm) affine of the ROI volume ``(image_size, image_size, slices)``.

    Chain: ROI voxel -> crop voxel in the resampled grid (in-plane resize,
    pixel centres aligned) -> canonical (RAS+) voxel -> stored voxel -> world.
    """
    shape = np.asarray(geometry.canonical_shape, float)
    resampled = np.asarray(geometry.resampled_shape, float)
    scale = shape / resampled
    origin = np.array([*geometry.crop_origin, 0], float)
    zoom = np.array([geometry.crop_size / geometry.image_size] * 2 + [1.0])
    # crop voxel p = zoom * (q + 0.5) - 0.5; canonical c = scale * (origin + p + 0.5) - 0.5
    to_canonical = np.eye(4)
    to_canonical[:3, :3] = np.diag(scale * zoom)
    to_canonical[:3, 3] = scale * (origin + 0.5 * zoom) - 0.5
    canonical_to_stored = nib.orientations.inv_ornt_aff(np.asarray(geometry.orientation), geometry.original_shape)
    return np.asarray(geometry.original_affine) @ canonical_to_stored @ to_canonical


def slices_to_roi_array(slices: np.ndarray) -> np.ndarray:
    """Ingest slices ``(Z, S, S)`` (display orientation) -> ROI array ``(X, Y, Z)`` in RAS+ order."""
    return np.ascontiguousarray(np.flip(np.asarray(slices), axis=1).transpose(2, 1, 0))


def roi_array_to_slices(array: np.ndarray) -> np.ndarray:
    """The inverse of :func:`slices_to_roi_array`."""
    return np.ascontiguousarray(np.flip(np.asarray(array).transpose(2, 1, 0), axis=1))


def roi_image(slices: np.ndarray, geometry: SliceGeometry, *, is_label: bool) -> nib.Nifti1Image:
    """``(Z, S, S)`` slices in [-1, 1] (images) or label values -> the ROI NIfTI volume."""
    array = slices_to_roi_array(slices)
    array = array.astype(np.uint8) if is_label else roi_intensities(array)
    image = nib.Nifti1Image(array, roi_affine(geometry))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    image.header.set_xyzt_units("mm")
    return image


def paste_back(roi_label: np.ndarray, geometry: SliceGeometry) -> nib.Nifti1Image:
    """An ROI label array ``(X, Y, Z)`` -> label NIfTI on the source volume's full original grid (0 outside)."""
    expected = (geometry.image_size, geometry.image_size, geometry.n_slices)
    if tuple(roi_label.shape) != expected:
        raise ValueError(f"expected an ROI label of shape {expected} for this volume, got {tuple(roi_label.shape)}")
    return slices_to_volume(roi_array_to_slices(roi_label.astype(np.uint8)), geometry, is_label=True)


def save_nifti(image: nib.Nifti1Image, path: Path) -> Path:
    """Write a NIfTI file atomically."""
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return path


def read_geometry(path: Path) -> SliceGeometry:
    """The geometry that :func:`cut_roi` stored beside an ROI volume."""
    values = json.loads(Path(path).read_text())
    values.pop("sources", None)
    return SliceGeometry.from_dict(values)


@dataclass(frozen=True)
class RoiCase:
    """One volume cut to its ROI: the files nnUNet reads, and the geometry to paste predictions back."""

    case_id: str
    image: Path
    """ROI image NIfTI."""
    label: Path | None
    """ROI label NIfTI, when the volume has a label."""
    geometry: Path
    """JSON of the :class:`SliceGeometry`."""


def cut_roi(
    case_id: str, image_path: Path, label_path: Path | None, settings: IngestConfig, out_dir: Path
) -> RoiCase:
    """Cut one volume (and its label) to its ROI under ``out_dir``: ``<case>_0000.nii.gz``, ``<case>.nii.gz``, ``<case>.roi.json``.

    Files already there for the same sources and settings are kept (the
    geometry JSON, written last, records them).
    """
    out_dir = Path(out_dir)
    image_out, label_out = out_dir / f"{case_id}_0000.nii.gz", out_dir / f"{case_id}.nii.gz"
    geometry_out = out_dir / f"{case_id}{GEOMETRY_SUFFIX}"
    stamp = _stamp(image_path, label_path, settings)
    case = RoiCase(case_id, image_out, None if label_path is None else label_out, geometry_out)
    if geometry_out.is_file() and json.loads(geometry_out.read_text()).get("sources") == stamp:
        if image_out.is_file() and (label_path is None or label_out.is_file()):
            return case
    volume = load_volume(image_path)
    geometry = plan_roi(volume, settings)
    save_nifti(roi_image(volume_to_slices(volume.data, geometry, is_label=False), geometry, is_label=False), image_out)
    if label_path is not None:
        label = load_volume(label_path, is_label=True)
        check_pair(volume, label, Path(image_path), Path(label_path))
        save_nifti(roi_image(volume_to_slices(label.data, geometry, is_label=True), geometry, is_label=True), label_out)
    write_text_atomic(geometry_out, json.dumps(geometry.to_dict() | {"sources": stamp}))
    return case


def _stamp(image_path: Path, label_path: Path | None, settings: IngestConfig) -> dict:
    files = [p for p in (image_path, label_path) if p is not None]
    return {
        "files": {str(Path(p).resolve()): [Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for p in files},
        "roi": settings.model_dump(mode="json", include=set(ROI_SETTINGS)),
    }

