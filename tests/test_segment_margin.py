"""The unlabelled margin around pseudo-labelled VS (tanq_ray.segment.margin)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tanq_ray.labels import BACKGROUND, COCHLEA, UNLABELLED, VS
from tanq_ray.segment.margin import with_unlabelled_margin, write_with_unlabelled_margin
from tanq_ray.segment.refine import VsLocationPrior


def test_background_within_the_margin_in_mm_becomes_unlabelled_on_an_anisotropic_grid() -> None:
    label = np.zeros((21, 21, 9), np.uint8)
    label[10, 10, 4] = VS
    label[10, 13, 4] = COCHLEA  # 1.5 mm from the VS: a structure keeps its class inside the margin
    marked = with_unlabelled_margin(label, (0.5, 0.5, 2.0), margin_mm=2.0)
    assert marked[10, 10, 4] == VS and marked[10, 13, 4] == COCHLEA
    assert marked[10, 14, 4] == UNLABELLED  # 2.0 mm in-plane
    assert marked[10, 15, 4] == BACKGROUND  # 2.5 mm
    assert marked[10, 10, 5] == UNLABELLED and marked[10, 10, 6] == BACKGROUND  # 2 and 4 mm across slices
    assert marked[11, 11, 5] == BACKGROUND  # sqrt(0.25 + 0.25 + 4) mm > 2 mm
    disc = sum(1 for i in range(-4, 5) for j in range(-4, 5) if i * i + j * j <= 16)  # radius 4 voxels in-plane
    assert (marked == UNLABELLED).sum() == disc - 2 + 2  # less the VS and the cochlea, plus one voxel in each neighbouring slice
    assert (label == VS).sum() == 1 and UNLABELLED not in label  # the input is not changed


def test_a_label_without_a_vs_is_unchanged_and_the_margin_must_be_positive() -> None:
    label = np.zeros((5, 5, 3), np.uint8)
    label[2, 2, 1] = COCHLEA
    assert np.array_equal(with_unlabelled_margin(label, (1.0, 1.0, 1.0), 3.0), label)
    with pytest.raises(ValueError, match="must be positive"):
        with_unlabelled_margin(label, (1.0, 1.0, 1.0), 0.0)


def test_the_written_copy_keeps_the_grid(tmp_path: Path) -> None:
    label = np.zeros((9, 9, 5), np.uint8)
    label[4, 4, 2] = VS
    affine = np.diag([-0.8, -0.8, 1.5, 1.0])
    source = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(label, affine), str(source))
    written = write_with_unlabelled_margin(source, tmp_path / "training" / "case.nii.gz", 1.0)
    image = nib.load(str(written))
    assert np.allclose(image.affine, affine) and image.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(image.dataobj), with_unlabelled_margin(label, (0.8, 0.8, 1.5), 1.0))
    assert [p.name for p in written.parent.iterdir()] == ["case.nii.gz"]  # no temporary file left
    stamp = written.stat().st_mtime_ns
    assert write_with_unlabelled_margin(source, written, 1.0).stat().st_mtime_ns == stamp  # an up-to-date copy is kept


def test_a_label_without_a_vs_leaves_unlabelled_where_the_source_scans_have_one(tmp_path: Path) -> None:
    source = np.zeros((20, 20, 10), np.uint8)
    source[4:7, 9:12, 4:6] = VS  # left of centre; its mirror image covers x 13-15
    nib.save(nib.Nifti1Image(source, np.diag([2.0, 2.0, 2.0, 1.0])), str(tmp_path / "source.nii.gz"))
    region = VsLocationPrior.from_labels([tmp_path / "source.nii.gz"], 0.0)
    label = np.zeros((20, 20, 10), np.uint8)
    label[14, 10, 4] = COCHLEA  # a structure inside the region keeps its class
    marked = with_unlabelled_margin(label, (2.0, 2.0, 2.0), 3.0, region)
    expected = np.zeros_like(label)
    expected[4:7, 9:12, 4:6] = UNLABELLED
    expected[13:16, 9:12, 4:6] = UNLABELLED
    expected[14, 10, 4] = COCHLEA
    np.testing.assert_array_equal(marked, expected)
    # a label with a VS gets its margin only: the region is for labels that lost theirs
    label[10, 10, 5] = VS
    np.testing.assert_array_equal(with_unlabelled_margin(label, (2.0, 2.0, 2.0), 1.0, region), with_unlabelled_margin(label, (2.0, 2.0, 2.0), 1.0))
