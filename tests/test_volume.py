import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import PERMUTED_AFFINE, save_nifti, synthetic_pair
from tanq_ray.data.volume import BadVolumeError, check_pair, load_volume, sample_grid


def test_load_reorients_to_ras(tmp_path: Path) -> None:
    image, _ = synthetic_pair((20, 30, 10))
    volume = load_volume(save_nifti(image, tmp_path / "a_ceT1.nii.gz"))
    # stored axes (i, j, k) -> RAS axes (j, i, k) with j flipped, spacing follows
    assert volume.data.shape == (30, 20, 10)
    assert volume.spacing == pytest.approx((1.6, 1.6, 1.2))
    np.testing.assert_array_equal(volume.data[:, :, 3], image[:, ::-1, 3].T)
    assert volume.original_shape == (20, 30, 10)


def write_truncated(tmp_path: Path) -> Path:
    good = save_nifti(np.ones((20, 20, 20), np.float32), tmp_path / "t_ceT1.nii.gz")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    return good


def write_not_gzip(tmp_path: Path) -> Path:
    path = tmp_path / "g_ceT1.nii.gz"
    path.write_bytes(b"this is not a nifti file at all" * 10)
    return path


def write_corrupt_header(tmp_path: Path) -> Path:
    path = tmp_path / "h_ceT1.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 400))
    return path


@pytest.mark.parametrize("writer", [write_truncated, write_not_gzip, write_corrupt_header])
def test_unreadable_files_name_the_file(tmp_path: Path, writer) -> None:
    path = writer(tmp_path)
    with pytest.raises(BadVolumeError) as err:
        load_volume(path)
    assert err.value.path == path and path.name in str(err.value)


@pytest.mark.parametrize(
    ("array", "is_label", "message"),
    [
        (np.ones((20, 20), np.float32), False, "3-D"),
        (np.ones((10, 10, 10, 2), np.float32), False, "3-D"),
        (np.where(np.eye(10)[:, :, None] > 0, np.nan, 1.0).repeat(4, 2).astype(np.float32), False, "NaN or infinite"),
        (np.full((8, 8, 8), np.inf, np.float32), False, "NaN or infinite"),
        (np.full((8, 8, 8), 3, np.uint8), True, r"label values must be in .*\[3\]"),
        (np.ones((8, 8, 1), np.float32), False, "at least 2 voxels"),
    ],
)
def test_bad_content_is_rejected(tmp_path: Path, array: np.ndarray, is_label: bool, message: str) -> None:
    path = save_nifti(array, tmp_path / "x.nii.gz", np.eye(4))
    with pytest.raises(BadVolumeError, match=message):
        load_volume(path, is_label=is_label)


def test_singleton_fourth_axis_is_accepted(tmp_path: Path) -> None:
    path = save_nifti(np.ones((6, 7, 8, 1), np.float32), tmp_path / "x.nii.gz", np.eye(4))
    assert load_volume(path).data.shape == (6, 7, 8)


def test_label_grid_must_match_image(tmp_path: Path) -> None:
    image_path = save_nifti(np.ones((8, 8, 8), np.float32), tmp_path / "i.nii.gz")
    other_shape = save_nifti(np.zeros((8, 8, 9), np.uint8), tmp_path / "s.nii.gz")
    other_affine = save_nifti(np.zeros((8, 8, 8), np.uint8), tmp_path / "a.nii.gz", np.diag([1.0, 1.0, 1.0, 1.0]))
    image = load_volume(image_path)
    with pytest.raises(BadVolumeError, match="shape"):
        check_pair(image, load_volume(other_shape, is_label=True), image_path, other_shape)
    with pytest.raises(BadVolumeError, match="affine"):
        check_pair(image, load_volume(other_affine, is_label=True), image_path, other_affine)


def test_sample_grid_upsamples_copies_and_fills() -> None:
    ramp = np.arange(10, dtype=np.float32)[:, None, None].repeat(4, 1).repeat(3, 2)
    # 4x finer grid over the same extent: cell centres aligned as in scipy's grid_mode
    up = sample_grid(ramp, (40, 4, 3), (0.25, 1.0, 1.0), (-0.375, 0.0, 0.0), order=1)
    assert up.mean() == pytest.approx(ramp.mean(), abs=0.05)
    np.testing.assert_array_equal(up[:, 1, 2], up[:, 0, 0])  # unit-scale axes are copies
    np.testing.assert_allclose(up[4:36:4], (np.arange(1, 9) - 0.375)[:, None, None].repeat(4, 1).repeat(3, 2), atol=1e-5)
    # a window reaching past the array: outside positions get the fill value
    window = sample_grid(ramp, (14, 4, 3), (1.0, 1.0, 1.0), (-2.0, 0.0, 0.0), order=1, fill=-7.0)
    assert (window[:2] == -7).all() and (window[12:] == -7).all()
    np.testing.assert_array_equal(window[2:12], ramp)
    labels = (ramp > 4).astype(np.uint8)
    assert set(np.unique(sample_grid(labels, (23, 4, 3), (10 / 23, 1.0, 1.0), (0.0, 0.0, 0.0), order=0))) == {0, 1}


def test_affine_fixture_is_permuted() -> None:
    assert nib.aff2axcodes(PERMUTED_AFFINE) != ("R", "A", "S")

