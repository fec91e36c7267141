"""Structures a translation erased, left unlabelled or redrawn in its pseudo-hrT2 (tanq_ray.segment.erased_structures)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tanq_ray.labels import BACKGROUND, COCHLEA, UNLABELLED, VS
from tanq_ray.segment import DatasetError, TrainingCase
from tanq_ray.config import SegmentConfig
from tanq_ray.segment.erased_structures import (
    structure_pieces,
    treat_erased_structures,
    visible_contrast,
    with_erased_structures_redrawn,
    with_erased_structures_unlabelled,
)

SPACING = (1.3, 1.3, 1.5)  # the tiny ROI grid: slices along the last axis


def _volume(cochlea_contrast: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume with a VS drawn 1.5 sd above its surroundings and two cochleae, the left one at ``cochlea_contrast``."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 0.03, (40, 40, 8)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[20:26, 20:26, 2:6] = VS
    label[8:10, 10:12, 3:5] = COCHLEA  # left
    label[30:32, 10:12, 3:5] = COCHLEA  # right
    image[label == VS] += 1.5
    image[30:32, 10:12, 3:5] += 1.5
    image[8:10, 10:12, 3:5] += cochlea_contrast
    return image, label


def test_each_piece_is_measured_against_its_in_plane_ring() -> None:
    image, label = _volume(cochlea_contrast=0.0)
    pieces = list(structure_pieces(image, label, SPACING))
    assert [structure for structure, _, _ in pieces] == [VS, COCHLEA, COCHLEA]
    contrasts = [contrast for _, _, contrast in pieces]
    assert contrasts[0] > 2.0 and contrasts[2] > 2.0  # z-scores of a volume whose sd is about 0.25
    assert abs(contrasts[1]) < 0.3
    # the ring is in-plane: a bright slice above and below a structure does not change its contrast
    image[:, :, 1] += 5.0
    image[:, :, 6] += 5.0
    shifted = [contrast for _, _, contrast in structure_pieces(image, label, SPACING)]
    assert shifted[0] / shifted[2] == pytest.approx(contrasts[0] / contrasts[2], rel=1e-3)


@pytest.mark.parametrize("drawn", [0.0, -0.01, 0.01])  # raw units: within 0.05 sd of the volume
def test_a_cochlea_drawn_at_no_contrast_is_unlabelled_and_the_rest_kept(drawn: float) -> None:
    image, label = _volume(cochlea_contrast=drawn)
    marked = with_erased_structures_unlabelled(image, label, SPACING, min_contrast=0.15)
    expected = label.copy()
    expected[8:10, 10:12, 3:5] = UNLABELLED
    np.testing.assert_array_equal(marked, expected)
    assert UNLABELLED not in label  # the input is not changed


def test_a_structure_drawn_darker_than_its_surroundings_is_visible() -> None:
    image, label = _volume(cochlea_contrast=-1.5)
    np.testing.assert_array_equal(with_erased_structures_unlabelled(image, label, SPACING, 0.15), label)


def test_the_least_contrast_must_be_positive() -> None:
    image, label = _volume(cochlea_contrast=0.0)
    with pytest.raises(ValueError, match="must be positive"):
        with_erased_structures_unlabelled(image, label, SPACING, 0.0)


def _save(array: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), str(path))
    return path


def test_cases_get_a_partial_copy_only_where_a_structure_was_erased(tmp_path: Path) -> None:
    erased_image, erased_label = _volume(cochlea_contrast=0.0)
    kept_image, kept_label = _volume(cochlea_contrast=1.5, seed=1)
    cases = [
        TrainingCase("etz_1__cyclegan", _save(erased_image, tmp_path / "a.nii.gz"), _save(erased_label, tmp_path / "a_label.nii.gz"), group="etz_1"),
        TrainingCase("etz_1__tanq", _save(kept_image, tmp_path / "b.nii.gz"), _save(kept_label, tmp_path / "b_label.nii.gz"), group="etz_1"),
    ]
    folder = tmp_path / "erased"
    erased, kept = treat_erased_structures(cases, folder, 0.15)
    assert kept == cases[1]
    assert erased.partial and erased.group == "etz_1" and erased.label == folder / "etz_1__cyclegan.nii.gz"
    written = nib.load(str(erased.label))
    assert np.allclose(written.affine, np.diag([*SPACING, 1.0])) and written.get_data_dtype() == np.uint8
    assert (np.asarray(written.dataobj) == UNLABELLED).sum() == 8 and (np.asarray(written.dataobj) == COCHLEA).sum() == 8
    assert sorted(p.name for p in folder.iterdir()) == ["etz_1__cyclegan.nii.gz"]  # no temporary file left
    # resumed: an up-to-date copy is kept; a newer translation is measured again
    stamp = erased.label.stat().st_mtime_ns
    assert treat_erased_structures(cases, folder, 0.15)[0].label.stat().st_mtime_ns == stamp
    visible, _ = _volume(cochlea_contrast=1.5)
    _save(visible, tmp_path / "a.nii.gz")
    os.utime(tmp_path / "a.nii.gz", ns=(stamp + 10**9, stamp + 10**9))
    assert treat_erased_structures(cases, folder, 0.15)[0] == cases[0]
    assert BACKGROUND in erased_label  # the source label file is untouched
    np.testing.assert_array_equal(np.asarray(nib.load(str(cases[0].label)).dataobj), erased_label)


def test_a_label_on_another_grid_names_the_case_and_both_files(tmp_path: Path) -> None:
    image, label = _volume(cochlea_contrast=0.0)
    case = TrainingCase("etz_2__tanq", _save(image, tmp_path / "img.nii.gz"), _save(label[:, :, :6], tmp_path / "lab.nii.gz"))
    with pytest.raises(DatasetError, match=r"case 'etz_2__tanq': label '.*lab.nii.gz' has shape \(40, 40, 6\), its image '.*img.nii.gz'"):
        treat_erased_structures([case], tmp_path / "erased", 0.15)


def test_a_visible_contrast_is_drawn_from_both_sides_of_the_range_and_never_near_zero() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([visible_contrast((-0.5, 2.0), 0.15, rng) for _ in range(4000)])
    assert draws.min() >= -0.5 and draws.max() <= 2.0
    assert not ((draws > -0.15) & (draws < 0.15)).any()
    # uniform on what is left: 0.35 of 2.2 below zero
    assert (draws < 0).mean() == pytest.approx(0.35 / 2.2, abs=0.03)
    assert visible_contrast((0.5, 0.5), 0.15, rng) == 0.5
    with pytest.raises(ValueError, match="no value at least 0.15 from 0"):
        visible_contrast((-0.1, 0.15), 0.15, rng)


def test_an_erased_cochlea_is_redrawn_visible_with_its_texture_and_the_rest_kept() -> None:
    image, label = _volume(cochlea_contrast=0.0)
    erased = np.zeros(label.shape, bool)
    erased[8:10, 10:12, 3:5] = True
    for seed in range(5):
        redrawn = with_erased_structures_redrawn(image, label, SPACING, 0.15, (-0.5, 2.0), np.random.default_rng(seed))
        np.testing.assert_array_equal(redrawn[~erased], image[~erased])
        shift = redrawn[erased] - image[erased]
        assert np.ptp(shift) == pytest.approx(0.0, abs=1e-5)  # one shift per piece: its texture is kept
        contrasts = [contrast for _, _, contrast in structure_pieces(redrawn, label, SPACING)]
        assert 0.15 <= abs(contrasts[1]) <= 2.1  # in standard deviations of the volume as it was, near enough
    np.testing.assert_array_equal(  # a visible structure is not touched
        with_erased_structures_redrawn(*_volume(cochlea_contrast=1.5), SPACING, 0.15, (-0.5, 2.0), np.random.default_rng(0)),
        _volume(cochlea_contrast=1.5)[0],
    )


def test_redrawn_cases_get_a_copy_of_their_image_with_the_same_draws_every_time(tmp_path: Path) -> None:
    image, label = _volume(cochlea_contrast=0.0)
    case = TrainingCase("etz_1__cyclegan", _save(image, tmp_path / "a.nii.gz"), _save(label, tmp_path / "a_label.nii.gz"), group="etz_1")
    folder = tmp_path / "erased"
    (redrawn,) = treat_erased_structures([case], folder, 0.15, "redrawn", (-0.5, 2.0))
    assert redrawn == TrainingCase(case.case_id, folder / "etz_1__cyclegan.nii.gz", case.label, group="etz_1")
    written = nib.load(str(redrawn.image))
    assert np.allclose(written.affine, np.diag([*SPACING, 1.0])) and written.get_data_dtype() == np.float32
    first = np.asarray(written.dataobj)
    assert not np.array_equal(first, image)
    np.testing.assert_array_equal(np.asarray(nib.load(str(case.image)).dataobj), image)  # the translation is untouched
    redrawn.image.unlink()
    (again,) = treat_erased_structures([case], folder, 0.15, "redrawn", (-0.5, 2.0))
    np.testing.assert_array_equal(np.asarray(nib.load(str(again.image)).dataobj), first)
    with pytest.raises(ValueError, match="contrast range"):
        treat_erased_structures([case], tmp_path / "other", 0.15, "redrawn")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"translated_structure_min_contrast": 0.15}, "needs translated_structure_min_contrast .* and structure_contrast"),
        ({"structure_contrast": (-0.5, 2.0)}, "needs translated_structure_min_contrast"),
        ({"translated_structure_min_contrast": 0.5, "structure_contrast": (-0.5, 0.5)}, r"\[-0.5, 0.5\] at least .* 0.5 from 0"),
    ],
)
def test_redrawing_needs_which_pieces_and_a_visible_range(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmentConfig(translated_erased_structures="redrawn", **settings)
    assert SegmentConfig(translated_erased_structures="redrawn", translated_structure_min_contrast=0.15, structure_contrast=(-0.5, 2.0))
