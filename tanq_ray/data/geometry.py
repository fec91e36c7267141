"""Volume <-> axial slices, and back onto the original grid.

Forward (paper §4.1, "Implementation details"): a RAS+ volume is resampled to
the target spacing (0.41 x 0.41 x 1.5 mm; labels nearest-neighbour),
intensities are mapped from a robust percentile window to [-1, 1], each axial
slice is center-cropped (or padded) to ``crop_size`` and resized to
``image_size``. Slices are stored in display orientation: rows run anterior ->
posterior, columns right -> left of the array's x axis (``flipud(data[:, :, z].T)``).

Inverse: :func:`slices_to_volume` undoes every step and returns a NIfTI image
with the original shape and affine, so translated slices become a volume that
overlays the source ceT1 and its label exactly. Everything the inverse needs is
in :class:`SliceGeometry`, which the ingest manifest stores per volume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from tanq_ray.data.volume import Volume, resampled_shape, sample_grid
from tanq_ray.labels import BACKGROUND as BACKGROUND_LABEL
from tanq_ray.labels import VALUES as LABEL_VALUES

BACKGROUND = -1.0  # normalised intensity used to pad outside the field of view


@dataclass(frozen=True)
class SliceGeometry:
    """How one volume was cut into slices; JSON-serialisable via :meth:`to_dict`."""

    original_shape: tuple[int, int, int]
    original_affine: tuple[tuple[float, ...], ...]
    orientation: tuple[tuple[float, float], ...]
    canonical_shape: tuple[int, int, int]
    canonical_spacing: tuple[float, float, float]
    resampled_shape: tuple[int, int, int]
    crop_size: int
    image_size: int
    window: tuple[float, float]
    crop_shift: tuple[int, int] = (0, 0)
    """In-plane (x, y) shift of the crop from the grid's centre, in resampled voxels (RAS+: towards right, anterior)."""

    @property
    def crop_origin(self) -> tuple[int, int]:
        """In-plane voxel (x, y) of the crop's first corner in the resampled grid; negative = padding."""
        centred = ((self.resampled_shape[0] - self.crop_size) // 2, (self.resampled_shape[1] - self.crop_size) // 2)
        return (centred[0] + self.crop_shift[0], centred[1] + self.crop_shift[1])

    @property
    def n_slices(self) -> int:
        return self.resampled_shape[2]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SliceGeometry":
        def tuples(value: Any) -> Any:
            return tuple(tuples(v) for v in value) if isinstance(value, list) else value

        return cls(**{key: tuples(value) for key, value in values.items()})


def robust_window(data: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Intensities at the two percentiles; widened to 1 unit when the volume is flat."""
    low, high = (float(v) for v in np.percentile(data, percentiles))
    return (low, high) if high > low else (low, low + 1.0)


def plan_geometry(
    volume: Volume,
    spacing: tuple[float, float, float],
    crop_size: int,
    image_size: int,
    percentiles: tuple[float, float],
    shift_mm: tuple[float, float] = (0.0, 0.0),
) -> SliceGeometry:
    """Decide the resampled grid, crop and intensity window of one volume.

    The crop is the in-plane centre of the grid moved by ``shift_mm`` (RAS+ x, y),
    rounded to whole resampled voxels, over every axial slice.
    """
    return SliceGeometry(
        original_shape=volume.original_shape,
        original_affine=tuple(tuple(float(v) for v in row) for row in volume.original_affine),
        orientation=tuple((float(a), float(f)) for a, f in volume.orientation),
        canonical_shape=tuple(volume.data.shape),  # type: ignore[arg-type]
        canonical_spacing=volume.spacing,
        resampled_shape=resampled_shape(volume.data.shape, volume.spacing, spacing),  # type: ignore[arg-type]
        crop_size=crop_size,
        image_size=image_size,
        window=robust_window(volume.data, percentiles),
        crop_shift=(round(shift_mm[0] / spacing[0]), round(shift_mm[1] / spacing[1])),
    )


def _crop_to_canonical(geometry: SliceGeometry) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-axis ``(scale, offset)`` taking a voxel of the crop box (in the resampled grid) to a canonical voxel.

    The resampled grid covers the canonical volume's extent with
    ``resampled_shape`` voxels (cell centres aligned, as scipy's ``grid_mode``);
    the crop box starts at ``crop_origin`` in-plane and spans every slice.
    """
    origin = (*geometry.crop_origin, 0)
    scale = tuple(c / r for c, r in zip(geometry.canonical_shape, geometry.resampled_shape))
    return scale, tuple((o + 0.5) * s - 0.5 for o, s in zip(origin, scale))


def volume_to_slices(data: np.ndarray, geometry: SliceGeometry, *, is_label: bool) -> np.ndarray:
    """RAS+ ``(X, Y, Z)`` array -> ``(Z, image_size, image_size)`` slices.

    Only the crop box is interpolated: the full 0.41 mm grid is never built.
    Images come back as float32 in [-1, 1]; labels as uint8.
    """
    scale, offset = _crop_to_canonical(geometry)
    crop_shape = (geometry.crop_size, geometry.crop_size, geometry.n_slices)
    low, high = geometry.window
    crop = sample_grid(data, crop_shape, scale, offset, order=0 if is_label else 1, fill=0 if is_label else low)
    if not is_label:
        crop = np.clip(2.0 * (crop - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)
    slices = np.ascontiguousarray(np.flip(crop.transpose(2, 1, 0), axis=1))  # (Z, Y, X), anterior row first
    return _resize_slices(slices, geometry.image_size, is_label=is_label)


def slices_to_volume(
    slices: np.ndarray, geometry: SliceGeometry, *, is_label: bool, denormalise: bool = True
) -> nib.Nifti1Image:
    """``(Z, image_size, image_size)`` slices -> NIfTI on the volume's original grid and affine.

    The inverse of :func:`volume_to_slices`. Voxels outside the crop get the
    background (label 0, image intensity -1 before denormalising). With
    ``denormalise`` the [-1, 1] intensities are mapped back to the original
    window; without, they stay in [-1, 1].
    """
    expected = (geometry.n_slices, geometry.image_size, geometry.image_size)
    if tuple(slices.shape) != expected:
        raise ValueError(f"expected slices of shape {expected} for this volume, got {tuple(slices.shape)}")
    crop_slices = _resize_slices(np.asarray(slices), geometry.crop_size, is_label=is_label)
    crop = np.ascontiguousarray(np.flip(crop_slices, axis=1).transpose(2, 1, 0))  # back to (X, Y, Z)
    scale, offset = _crop_to_canonical(geometry)
    inverse_scale = tuple(1.0 / s for s in scale)
    inverse_offset = tuple(-o / s for o, s in zip(offset, scale))
    canonical = sample_grid(
        crop, geometry.canonical_shape, inverse_scale, inverse_offset, order=0 if is_label else 1,
        fill=0 if is_label else BACKGROUND,
    )  # fmt: skip
    if not is_label and denormalise:
        low, high = geometry.window
        canonical = (canonical + 1.0) / 2.0 * (high - low) + low
    stored_orientation = np.asarray(geometry.orientation)
    back = nib.orientations.ornt_transform(np.array([[0, 1], [1, 1], [2, 1]]), stored_orientation)
    data = nib.orientations.apply_orientation(canonical, back)
    image = nib.Nifti1Image(
        np.ascontiguousarray(data, dtype=np.uint8 if is_label else np.float32), np.asarray(geometry.original_affine)
    )
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    return image


def _resize_slices(slices: np.ndarray, size: int, *, is_label: bool) -> np.ndarray:
    """Resize ``(Z, H, W)`` slices to ``(Z, size, size)``.

    Images: bilinear with anti-aliasing, clipped to [-1, 1]. Labels: see
    :func:`_resize_labels`.
    """
    if slices.shape[1:] == (size, size):
        return slices.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(slices))
    if is_label:
        return _resize_labels(tensor, size)
    resized = F.interpolate(tensor[:, None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[:, 0].clamp_(-1.0, 1.0).numpy()


def _class_shares(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Share of each output pixel covered by ``mask`` ``(N, H, W)`` -> ``(N, size, size)`` in [0, 1]."""
    shrinking = size < mask.shape[-1]
    mode = {"mode": "area"} if shrinking else {"mode": "bilinear", "align_corners": False}
    return F.interpolate(mask[:, None].float(), size=(size, size), **mode)[:, 0]


def _resize_labels(labels: torch.Tensor, size: int) -> np.ndarray:
    """Resize ``(Z, H, W)`` label slices so that each labelled structure keeps its area and none disappears.

    Each output pixel takes the class (background included) with the largest
    share of it, which keeps shapes. That vote erodes a structure one or two
    output pixels wide (its border pixels are mostly background), so each
    connected structure of a foreground class in a source slice then grows
    into the background pixels it covers most until it has the area it covers
    in total (rounded), and at least one pixel: a cochlea two voxels wide at
    0.41 mm still exists at 1.6 mm, as the target-aware norms and the
    segmenter need it, and a cochlea at 1.3 mm keeps its size instead of
    about half of it, which a segmenter trained on it would learn to draw.
    """
    shares = _class_shares(torch.cat([labels == value for value in LABEL_VALUES]), size)
    shares = shares.reshape(len(LABEL_VALUES), *labels.shape[:1], size, size)
    resized = shares.argmax(dim=0).to(torch.uint8).numpy()
    source = labels.numpy()
    for z in range(source.shape[0]):
        for value in LABEL_VALUES[1:]:
            components, count = ndimage.label(source[z] == value)
            for component in range(1, count + 1):
                share = _class_shares(torch.from_numpy(components == component)[None], size)[0].numpy()
                _grow_to_area(resized[z], share, value)
    return resized


def _grow_to_area(resized: np.ndarray, share: np.ndarray, value: int) -> None:
    """Give ``value`` to the background pixels of ``resized`` that ``share`` covers most, until it covers its area.

    ``share``: the part of each output pixel one source structure covers; its
    sum is the structure's area in output pixels.
    """
    footprint = share > 0
    missing = max(1, round(float(share.sum()))) - int((resized[footprint] == value).sum())
    if missing <= 0:
        return
    free = np.flatnonzero(footprint & (resized == BACKGROUND_LABEL))
    best = free[np.argsort(-share.flat[free], kind="stable")[:missing]]
    resized.flat[best] = value
