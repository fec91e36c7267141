"""Reading and validating NIfTI volumes; resampling arrays to a new grid.

Every check raises :class:`BadVolumeError`, which names the file and what was
expected. The ingest stage turns these into skipped cases (see
:mod:`tanq_ray.data.ingest`).
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from tanq_ray.labels import VALUES

MAX_VOXELS = 2**28
"""Voxels a volume may hold, as stored or resampled to the ingest spacing (268M; a CrossMoDA ceT1 has about 31M).
A header claiming more is broken or not one MR volume, and reading it would exhaust memory."""
UNREADABLE = (OSError, EOFError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError, ValueError)
"""What nibabel raises for a file that is not a (complete) NIfTI."""
MAX_SLICES = 4096
"""Axial slices a volume may plan at the ingest spacing (a 1.5 mm grid over 6 m): more means a broken spacing."""


class BadVolumeError(ValueError):
    """A volume cannot be used; ``path`` is the offending file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class Volume:
    """A 3-D array in RAS+ voxel order plus what is needed to undo the reorientation.

    ``data`` is ``(X, Y, Z)`` with Z the axial (inferior->superior) axis,
    ``spacing`` in mm per axis, ``original_affine``/``original_shape`` describe
    the file as stored and ``orientation`` is nibabel's ornt array mapping the
    stored axes to RAS+.
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    orientation: np.ndarray


def check_header(path: Path, image: nib.Nifti1Image, target_spacing: Sequence[float] | None = None) -> None:
    """What the header alone tells, before any voxel is read: numeric voxels, and a size that fits in memory.

    ``target_spacing`` (mm, RAS+ axis order): the grid the volume will be
    resampled to, which must not plan more than :data:`MAX_SLICES` slices or
    :data:`MAX_VOXELS` voxels either.
    """
    dtype = image.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise BadVolumeError(path, f"voxel type {dtype} is not a grey level (an RGB or complex image?): expected one MR volume")
    shape = tuple(int(n) for n in image.shape)
    if math.prod(shape) > MAX_VOXELS:
        raise BadVolumeError(path, f"the header claims {shape} = {math.prod(shape):,} voxels, more than {MAX_VOXELS:,}")
    if target_spacing is None or len(shape) < 3:
        return
    affine = np.asarray(image.affine, dtype=np.float64)
    spacing = nib.affines.voxel_sizes(affine)[:3]
    axes = nib.orientations.io_orientation(affine)[:, 0]
    if np.isnan(axes).any() or not (spacing > 0).all():
        raise BadVolumeError(path, f"the affine has no usable orientation or spacing (voxel sizes {spacing.round(4).tolist()} mm)")
    order = np.argsort(axes.astype(int))  # stored axis of each RAS+ axis
    planned = resampled_shape(tuple(shape[i] for i in order), tuple(float(spacing[i]) for i in order), tuple(target_spacing))
    if planned[2] > MAX_SLICES or math.prod(planned) > MAX_VOXELS:
        raise BadVolumeError(
            path,
            f"voxel sizes {spacing.round(4).tolist()} mm over {shape} voxels plan {planned} voxels at the ingest spacing "
            f"{list(target_spacing)} mm (at most {MAX_SLICES} slices and {MAX_VOXELS:,} voxels): a broken spacing?",
        )


def load_volume(path: str | Path, *, is_label: bool = False, target_spacing: Sequence[float] | None = None) -> Volume:
    """Load a NIfTI file, validate it, and reorient it to RAS+ (closest canonical).

    Checks: the file decompresses and parses, its header describes a volume
    that fits in memory, also at ``target_spacing`` (:func:`check_header`),
    the image is 3-D (a trailing singleton 4th axis is dropped), all voxels
    are finite, and a label holds only values in {0, 1, 2}.
    """
    path = Path(path)
    try:
        image = nib.load(str(path))
    except UNREADABLE as err:
        raise BadVolumeError(path, f"cannot be read as NIfTI ({type(err).__name__}: {err})") from None
    check_header(path, image, target_spacing)
    try:
        data = np.asanyarray(image.dataobj)
    except UNREADABLE as err:
        raise BadVolumeError(path, f"cannot be read as NIfTI ({type(err).__name__}: {err})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BadVolumeError(path, f"expected a 3-D volume, got shape {tuple(data.shape)}")
    if min(data.shape) < 2:
        raise BadVolumeError(path, f"expected at least 2 voxels per axis, got shape {tuple(data.shape)}")
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise BadVolumeError(path, f"{bad} voxels are NaN or infinite")
    if is_label:
        values = np.unique(data)
        unexpected = sorted(set(values.tolist()) - set(VALUES))
        if unexpected:
            shown = [int(v) if float(v).is_integer() else float(v) for v in unexpected[:5]]
            raise BadVolumeError(path, f"label values must be in {set(VALUES)}, found {shown}")
    affine = np.asarray(image.affine, dtype=np.float64)
    orientation = nib.orientations.io_orientation(affine)
    canonical = nib.orientations.apply_orientation(data, orientation)
    spacing = tuple(float(s) for s in nib.affines.voxel_sizes(affine)[list(orientation[:, 0].astype(int).argsort())])
    return Volume(
        data=np.ascontiguousarray(canonical, dtype=np.uint8 if is_label else np.float32),
        spacing=spacing,  # type: ignore[arg-type]
        original_affine=affine,
        original_shape=tuple(int(s) for s in data.shape),  # type: ignore[arg-type]
        orientation=orientation,
    )


def check_pair(image: Volume, label: Volume, image_path: Path, label_path: Path) -> None:
    """A label must share its image's grid: same shape and the same affine (to 1e-3 mm)."""
    if image.original_shape != label.original_shape:
        raise BadVolumeError(
            label_path, f"shape {label.original_shape} differs from image '{image_path.name}' {image.original_shape}"
        )
    if not np.allclose(image.original_affine, label.original_affine, atol=1e-3):
        raise BadVolumeError(label_path, f"affine differs from image '{image_path.name}'")


def resampled_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> tuple[int, ...]:
    """Grid size that covers the same extent at ``target`` spacing (at least 1 voxel per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def sample_grid(
    array: np.ndarray,
    output_shape: tuple[int, ...],
    scale: tuple[float, ...],
    offset: tuple[float, ...],
    *,
    order: int,
    fill: float = 0.0,
) -> np.ndarray:
    """``out[j] = array[scale * j + offset]`` per axis, interpolated (``order`` 0 nearest, 1 linear).

    Positions more than half a voxel outside ``array`` get ``fill``; inside,
    edges are extended (no dark rim). Axes with scale 1 and integer offset are
    exact copies.
    """
    out = ndimage.affine_transform(
        array, np.asarray(scale, float), offset=np.asarray(offset, float), output_shape=tuple(output_shape),
        order=order, mode="nearest", prefilter=False,
    )  # fmt: skip
    for axis, size in enumerate(output_shape):
        position = scale[axis] * np.arange(size) + offset[axis]
        outside = (position < -0.5) | (position > array.shape[axis] - 0.5)
        if outside.any():
            index: list[slice | np.ndarray] = [slice(None)] * array.ndim
            index[axis] = outside
            out[tuple(index)] = fill
    return out
