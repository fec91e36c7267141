"""Reading and validating NIfTI volumes; resampling arrays to a new grid.

Every check raises :class:`BadVolumeError`, which names the file and what was
expected. The ingest stage turns these into skipped cases (see
:mod:`tanq_ray.data.ingest`).
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from tanq_ray.labels import VALUES



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


def load_volume(path: str | Path, *, is_label: bool = False) -> Volume:
    """Load a NIfTI file, validate it, and reorient it to RAS+ (closest canonical).

    Checks: the file decompresses and parses, the image is 3-D (a trailing
    singleton 4th axis is dropped), all voxels are finite, and a label holds
    only values in {0, 1, 2}.
    """
    path = Path(path)
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError, ValueError) as err:
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
