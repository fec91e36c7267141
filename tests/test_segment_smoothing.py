"""In-plane smoothing of pseudo-hrT2 volumes (tanq_ray.segment.smoothing)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tanq_ray.segment.dataset import TrainingCase
from tanq_ray.segment.smoothing import smooth_in_plane, smoothed_cases

SPACING = (1.3, 1.3, 1.5)  # the tiny configuration's ROI grid: axis 2 is the coarse one


def test_a_checkerboard_is_removed_and_a_ramp_kept_in_plane_only() -> None:
    x, y, z = np.indices((8, 8, 4))
    checkerboard = ((x + y) % 2).astype(np.float32)
    np.testing.assert_allclose(smooth_in_plane(checkerboard, SPACING), 0.5)  # the Nyquist pattern becomes its mean
    stripes = (x % 2).astype(np.float32)  # the Nyquist frequency along one axis alone
    np.testing.assert_allclose(smooth_in_plane(stripes, SPACING), 0.5)
    ramp = (2.0 * x + 3.0 * y + 5.0 * z).astype(np.float32)
    inner = (slice(1, -1), slice(1, -1), slice(None))  # mirrored edges bend a ramp; inside it is kept
    np.testing.assert_allclose(smooth_in_plane(ramp, SPACING)[inner], ramp[inner], rtol=1e-6)
    slices = (z % 2).astype(np.float32)  # alternating slices: the coarse axis is not filtered
    np.testing.assert_array_equal(smooth_in_plane(slices, SPACING), slices)


def test_the_coarse_axis_is_found_by_spacing_and_bad_shapes_are_named() -> None:
    x = np.indices((4, 6, 6))[0]
    alternating = (x % 2).astype(np.float32)
    np.testing.assert_array_equal(smooth_in_plane(alternating, (3.0, 0.5, 0.5)), alternating)
    with pytest.raises(ValueError, match="3-D volume"):
        smooth_in_plane(np.zeros((4, 4)), (1.0, 1.0))


def test_smoothed_copies_keep_the_grid_and_an_up_to_date_copy_is_kept(tmp_path: Path) -> None:
    image = (np.indices((6, 6, 3)).sum(axis=0) % 2).astype(np.float32)
    affine = np.diag([-1.3, -1.3, 1.5, 1.0])
    source = tmp_path / "case__tanq.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(source))
    case = TrainingCase("case__tanq", source, tmp_path / "label.nii.gz", group="case")
    (copy,) = smoothed_cases([case], tmp_path / "smoothed")
    assert copy.image == tmp_path / "smoothed" / "case__tanq.nii.gz" and copy.label == case.label and copy.group == "case"
    written = nib.load(str(copy.image))
    assert np.allclose(written.affine, affine) and written.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asarray(written.dataobj), smooth_in_plane(image, (1.3, 1.3, 1.5)))
    assert [p.name for p in copy.image.parent.iterdir()] == ["case__tanq.nii.gz"]  # no temporary file left
    stamp = copy.image.stat().st_mtime_ns
    assert smoothed_cases([case], tmp_path / "smoothed")[0].image.stat().st_mtime_ns == stamp
