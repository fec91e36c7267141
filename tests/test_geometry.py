from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import save_nifti, synthetic_pair
from tanq_ray.data.geometry import SliceGeometry, plan_geometry, slices_to_volume, volume_to_slices
from tanq_ray.data.volume import load_volume


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    image, label = synthetic_pair((80, 96, 24))
    return save_nifti(image, tmp_path / "c_ceT1.nii.gz"), save_nifti(label, tmp_path / "c_Label.nii.gz")


@pytest.mark.parametrize(("crop_size", "image_size"), [(256, 256), (256, 128), (512, 96)])
def test_round_trip_restores_original_grid(pair: tuple[Path, Path], crop_size: int, image_size: int) -> None:
    image_path, label_path = pair
    image, label = load_volume(image_path), load_volume(label_path, is_label=True)
    geometry = plan_geometry(image, (0.41, 0.41, 1.5), crop_size, image_size, (0.5, 99.5))
    slices = volume_to_slices(image.data, geometry, is_label=False)
    label_slices = volume_to_slices(label.data, geometry, is_label=True)
    assert slices.shape == label_slices.shape == (geometry.n_slices, image_size, image_size)
    assert slices.min() >= -1 and slices.max() <= 1

    back = slices_to_volume(slices.astype(np.float16).astype(np.float32), geometry, is_label=False)
    back_label = slices_to_volume(label_slices, geometry, is_label=True)
    original = nib.load(str(image_path))
    original_label = np.asarray(nib.load(str(label_path)).dataobj)
    for restored in (back, back_label):
        assert restored.shape == original.shape
        np.testing.assert_allclose(restored.affine, original.affine)

    # compare where the crop reaches: map an all-ones label back to the original grid
    covered = np.asarray(slices_to_volume(np.ones_like(label_slices), geometry, is_label=True).dataobj) == 1
    assert covered.mean() > 0.5
    correlation = np.corrcoef(np.asarray(original.dataobj)[covered], np.asarray(back.dataobj)[covered])[0, 1]
    assert correlation > 0.97
    restored_label = np.asarray(back_label.dataobj)
    assert dice(original_label == 1, restored_label == 1) > 0.9
    assert dice(original_label == 2, restored_label == 2) > 0.5  # 7 voxels at 1.6 mm: the hardest case


def test_identity_resize_round_trip_is_nearly_exact(pair: tuple[Path, Path]) -> None:
    image_path, label_path = pair
    label = load_volume(label_path, is_label=True)
    geometry = plan_geometry(label, label.spacing, 128, 128, (0.0, 100.0))  # no resampling, crop pads
    restored = np.asarray(slices_to_volume(volume_to_slices(label.data, geometry, is_label=True), geometry, is_label=True).dataobj)
    np.testing.assert_array_equal(restored, np.asarray(nib.load(str(label_path)).dataobj))


def test_small_structure_survives_downsampling(tmp_path: Path) -> None:
    label = np.zeros((64, 64, 3), np.uint8)
    label[30:33, 30:33, :] = 2  # 3 x 3 cochlea, resized 4x smaller
    volume = load_volume(save_nifti(label, tmp_path / "l.nii.gz", np.eye(4)), is_label=True)
    geometry = plan_geometry(volume, volume.spacing, 64, 16, (0.0, 100.0))
    assert (volume_to_slices(volume.data, geometry, is_label=True) == 2).any()


def test_geometry_survives_json(pair: tuple[Path, Path]) -> None:
    import json

    image = load_volume(pair[0])
    geometry = plan_geometry(image, (0.41, 0.41, 1.5), 256, 64, (0.5, 99.5))
    assert SliceGeometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry


def test_wrong_slice_count_is_refused(pair: tuple[Path, Path]) -> None:
    image = load_volume(pair[0])
    geometry = plan_geometry(image, (0.41, 0.41, 1.5), 256, 64, (0.5, 99.5))
    with pytest.raises(ValueError, match="expected slices of shape"):
        slices_to_volume(np.zeros((geometry.n_slices + 1, 64, 64), np.float32), geometry, is_label=False)
