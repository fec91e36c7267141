"""The region of interest: crop + paste-back round trips, world placement, same grid across domains."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import PERMUTED_AFFINE, save_nifti, synthetic_pair
from tanq_ray.config import IngestConfig, load_config
from tanq_ray.data.geometry import volume_to_slices
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.data.roi import cut_roi, paste_back, plan_roi, read_geometry, roi_affine
from tanq_ray.data.volume import load_volume
from tanq_ray.labels import COCHLEA

LPS_AFFINE = np.diag([-0.39, -0.39, 1.6, 1.0]) @ np.eye(4)
LPS_AFFINE[:3, 3] = (40.0, 30.0, -20.0)
RAS_AFFINE = np.diag([0.45, 0.45, 1.2, 1.0])
RAS_AFFINE[:3, 3] = (-50.0, -40.0, -10.0)


def _label_pair(tmp_path: Path, affine: np.ndarray, shape=(200, 220, 24)) -> tuple[Path, Path]:
    image, label = synthetic_pair(shape)
    label[:] = 0
    label[120:150, 100:125, 8:16] = 1  # VS
    label[60:62, 110:112, 10:13] = 2  # a cochlea two voxels wide at 0.4 mm
    return save_nifti(image, tmp_path / "c_hrT2.nii.gz", affine), save_nifti(label, tmp_path / "c_Label.nii.gz", affine)


@pytest.mark.parametrize("affine", [RAS_AFFINE, LPS_AFFINE, PERMUTED_AFFINE], ids=["RAS", "LPS", "permuted"])
def test_label_crop_then_paste_back_is_exact(tmp_path: Path, affine: np.ndarray) -> None:
    """At the ingest spacing with no resize, cutting a label to its ROI and pasting it back loses nothing inside the box."""
    image_path, label_path = _label_pair(tmp_path, affine)
    label = load_volume(label_path, is_label=True)
    spacing = label.spacing
    settings = IngestConfig(spacing=spacing, crop_size=160, image_size=160)
    case = cut_roi("c", image_path, label_path, settings, tmp_path / "roi")
    roi_label = np.asarray(nib.load(str(case.label)).dataobj)
    back = paste_back(roi_label, read_geometry(case.geometry))
    original = np.asarray(nib.load(str(label_path)).dataobj)
    np.testing.assert_allclose(back.affine, nib.load(str(label_path)).affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), original)


@pytest.mark.parametrize("affine", [RAS_AFFINE, LPS_AFFINE], ids=["RAS", "LPS"])
def test_roi_affine_places_voxels_where_the_source_has_them(tmp_path: Path, affine: np.ndarray) -> None:
    """World position of each labelled ROI voxel lands on the same label in the source volume."""
    image_path, label_path = _label_pair(tmp_path, affine)
    settings = IngestConfig(spacing=(0.41, 0.41, 1.5), crop_size=256, image_size=128)
    case = cut_roi("c", image_path, label_path, settings, tmp_path / "roi")
    roi = nib.load(str(case.label))
    np.testing.assert_allclose(roi.affine, roi_affine(read_geometry(case.geometry)))
    np.testing.assert_allclose(nib.affines.voxel_sizes(roi.affine), (0.82, 0.82, 1.5), rtol=0.05)
    vs = np.argwhere(np.asarray(roi.dataobj) == 1)
    world = nib.affines.apply_affine(roi.affine, vs)
    source = nib.load(str(label_path))
    voxels = np.rint(nib.affines.apply_affine(np.linalg.inv(source.affine), world)).astype(int)
    hits = np.asarray(source.dataobj)[tuple(voxels.T)] == 1
    assert hits.mean() > 0.9


def test_downsampled_paste_back_keeps_both_structures(tmp_path: Path) -> None:
    image_path, label_path = _label_pair(tmp_path, LPS_AFFINE)
    settings = IngestConfig(spacing=(0.41, 0.41, 1.5), crop_size=256, image_size=64)
    case = cut_roi("c", image_path, label_path, settings, tmp_path / "roi")
    roi_label = np.asarray(nib.load(str(case.label)).dataobj)
    assert (roi_label == 2).any() and (roi_label == 1).any()
    back = np.asarray(paste_back(roi_label, read_geometry(case.geometry)).dataobj)
    original = np.asarray(nib.load(str(label_path)).dataobj)
    overlap = 2 * ((back == 1) & (original == 1)).sum() / ((back == 1).sum() + (original == 1).sum())
    assert overlap > 0.85
    assert (back == 2).any()


def test_cochlea_two_voxels_wide_survives_the_tiny_resolution(tmp_path: Path) -> None:
    """A 2-voxel cochlea at 0.4 mm, resized 256 -> 64 (1.6 mm pixels): present in every slice it was in."""
    label = np.zeros((300, 300, 6), np.uint8)
    label[140:142, 150:152, 1:5] = 2
    label[100:101, 90:93, 2] = 2  # a second, separate structure of the same class
    label[160:200, 160:200, :] = 1
    path = save_nifti(label, tmp_path / "l.nii.gz", np.diag([0.4, 0.4, 1.5, 1.0]))
    volume = load_volume(path, is_label=True)
    geometry = plan_roi(volume, IngestConfig(spacing=(0.41, 0.41, 1.5), crop_size=256, image_size=64, percentiles=(0, 100)))
    slices = volume_to_slices(volume.data, geometry, is_label=True)
    assert [int((s == 2).any()) for s in slices] == [0, 1, 1, 1, 1, 0]
    assert (slices[2] == 2).sum() == 2  # the two structures, one pixel each
    vs_pixels = (slices == 1).sum(axis=(1, 2))
    assert np.all(np.abs(vs_pixels - (40 * 0.4 / 1.64) ** 2) < 25)  # the VS keeps its size (about 95 pixels)


def test_the_phantoms_cochleae_keep_their_volume_on_the_tiny_roi_grid(tmp_path: Path) -> None:
    """Pooled over six subjects, each modality's cochlea labels cover as many mm^3 on the ROI grid as natively.

    A majority vote per 1.3 mm pixel kept about 0.64 of the ceT1 cochleae and
    0.75 of the hrT2 ones: models trained on them learned to draw the cochlea small.
    """
    generate_cohort(tmp_path, cases=6, eval_cases=0, size=96, seed=3)
    settings = load_config(Path(__file__).parents[1] / "configs" / "tiny.yaml").ingest
    roi_voxel_mm3 = (settings.crop_size * settings.spacing[0] / settings.image_size) ** 2 * settings.spacing[2]
    for pattern in ("train/*_Label.nii.gz", "train_hrT2_labels/*.nii.gz"):
        native = roi = 0.0
        for path in sorted(tmp_path.glob(pattern)):
            volume = load_volume(path, is_label=True)
            slices = volume_to_slices(volume.data, plan_roi(volume, settings), is_label=True)
            native += (volume.data == COCHLEA).sum() * float(np.prod(volume.spacing))
            roi += (slices == COCHLEA).sum() * roi_voxel_mm3
        assert 0.9 < roi / native < 1.12, pattern


def test_pseudo_and_real_hrT2_of_one_site_share_the_roi_grid(tmp_path: Path) -> None:
    """The ROI of a ceT1 (what pseudo-hrT2 is written on) and of an hrT2 of the same site: same spacing and shape."""
    cohort = generate_cohort(tmp_path / "phantom", cases=2, eval_cases=0, size=64)
    settings = IngestConfig(image_size=64)
    ceT1 = cut_roi("a", cohort.train_dir / f"{cohort.labelled_cases[0]}_ceT1.nii.gz", None, settings, tmp_path / "r")
    hrT2 = cut_roi("b", cohort.train_dir / f"{cohort.unlabelled_cases[0]}_hrT2.nii.gz", None, settings, tmp_path / "r")
    assert cohort.labelled_cases[0].split("_")[1] == cohort.unlabelled_cases[0].split("_")[1]  # same site
    a, b = nib.load(str(ceT1.image)), nib.load(str(hrT2.image))
    assert a.shape[:2] == b.shape[:2] == (64, 64)
    # the resampled grid keeps each volume's extent with a whole number of voxels: spacing within 0.5 %
    np.testing.assert_allclose(a.header.get_zooms(), b.header.get_zooms(), rtol=5e-3)


def test_roi_shift_moves_the_box(tmp_path: Path) -> None:
    image_path, _ = _label_pair(tmp_path, RAS_AFFINE)
    volume = load_volume(image_path)
    centred = plan_roi(volume, IngestConfig(image_size=64))
    shifted = plan_roi(volume, IngestConfig(image_size=64, roi_shift_mm=(8.2, -4.1)))
    assert np.subtract(shifted.crop_origin, centred.crop_origin).tolist() == [20, -10]
    moved = roi_affine(shifted)[:3, 3] - roi_affine(centred)[:3, 3]
    np.testing.assert_allclose(moved, (8.2, -4.1, 0.0), atol=0.05)  # whole voxels of the extent-keeping grid
