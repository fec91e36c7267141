"""nnUNet raw dataset writer, input checks, grouped folds and pseudo-label refinement (no Ray, no training)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tanq_ray.data.phantom import generate_cohort
from tanq_ray.segment.dataset import DatasetError, TrainingCase, fold_splits, write_raw_dataset
from tanq_ray.segment.folders import NnUNetFolders, dataset_name
from tanq_ray.segment.predict import probabilities_path
from tanq_ray.segment.refine import CochleaPosition, VsLocationPrior, refine_label, refine_pseudo_labels


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    return generate_cohort(tmp_path_factory.mktemp("phantom"), cases=4, eval_cases=0, size=48, seed=0)


def stand_in_cases(cohort) -> list[TrainingCase]:
    """The phantom's ceT1 volumes stand in for hrT2: nnUNet does not care about the contrast."""
    train = cohort.train_dir
    return [TrainingCase(c, train / f"{c}_ceT1.nii.gz", train / f"{c}_Label.nii.gz") for c in cohort.labelled_cases]


def folders_in(path: Path) -> NnUNetFolders:
    return NnUNetFolders(path, dataset_name(501))


def save(array: np.ndarray, path: Path, zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([*zooms, 1.0])), str(path))
    return path


def test_raw_dataset_passes_nnunet_integrity_check(cohort, tmp_path: Path) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    folders = folders_in(tmp_path)
    cases = stand_in_cases(cohort)
    assert write_raw_dataset(folders, cases) is True
    meta = json.loads((folders.raw_dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "hrT2"}
    assert meta["labels"] == {"background": 0, "VS": 1, "cochlea": 2}
    assert meta["file_ending"] == ".nii.gz" and meta["numTraining"] == 4
    for case in cases:
        assert (folders.raw_dataset / "imagesTr" / f"{case.case_id}_0000.nii.gz").is_file()
        assert (folders.raw_dataset / "labelsTr" / f"{case.case_id}.nii.gz").is_file()
    verify_dataset_integrity(str(folders.raw_dataset), 1)  # raises on any problem

    assert write_raw_dataset(folders, cases) is False  # complete and identical: kept
    with pytest.raises(DatasetError, match="other training cases"):
        write_raw_dataset(folders, cases[:3])


def test_missing_label_is_named(cohort, tmp_path: Path) -> None:
    case = stand_in_cases(cohort)[0]
    missing = tmp_path / "nowhere_Label.nii.gz"
    with pytest.raises(DatasetError, match="label file '.*nowhere_Label.nii.gz' does not exist"):
        write_raw_dataset(folders_in(tmp_path / "work"), [TrainingCase(case.case_id, case.image, missing)])
    assert not list((tmp_path / "work").rglob("dataset.json"))


def test_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    image = save(np.zeros((8, 8, 4), np.float32), tmp_path / "a_hrT2.nii.gz")
    label = save(np.zeros((8, 9, 4), np.uint8), tmp_path / "a_Label.nii.gz")
    expected = r"a_Label.nii.gz' has shape \(8, 9, 4\) but image '.*a_hrT2.nii.gz' has \(8, 8, 4\)"
    with pytest.raises(DatasetError, match=expected):
        write_raw_dataset(folders_in(tmp_path / "work"), [TrainingCase("a", image, label)])


def test_voxel_size_mismatch_is_refused(tmp_path: Path) -> None:
    image = save(np.zeros((8, 8, 4), np.float32), tmp_path / "a_hrT2.nii.gz", (1.0, 1.0, 1.5))
    label = save(np.zeros((8, 8, 4), np.uint8), tmp_path / "a_Label.nii.gz", (1.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match="a_Label.nii.gz' has voxel size"):
        write_raw_dataset(folders_in(tmp_path / "work"), [TrainingCase("a", image, label)])


def test_unexpected_label_values_are_named(tmp_path: Path) -> None:
    image = save(np.zeros((8, 8, 4), np.float32), tmp_path / "a_hrT2.nii.gz")
    values = np.zeros((8, 8, 4), np.uint8)
    values[0, 0, 0], values[1, 1, 1] = 3, 2
    label = save(values, tmp_path / "a_Label.nii.gz")
    with pytest.raises(DatasetError, match=r"a_Label.nii.gz' holds values \[3\] outside"):
        write_raw_dataset(folders_in(tmp_path / "work"), [TrainingCase("a", image, label)])


def test_a_partial_case_may_mark_voxels_unlabelled_and_the_dataset_then_declares_nnunets_ignore_label(tmp_path: Path) -> None:
    image = save(np.zeros((8, 8, 4), np.float32), tmp_path / "a_hrT2.nii.gz")
    values = np.zeros((8, 8, 4), np.uint8)
    values[0, 0, 0], values[1, 1, 1] = 3, 1
    label = save(values, tmp_path / "a_Label.nii.gz")
    folders = folders_in(tmp_path / "work")
    write_raw_dataset(folders, [TrainingCase("a", image, label, partial=True), TrainingCase("b", image, image)])
    labels = json.loads((folders.raw_dataset / "dataset.json").read_text())["labels"]
    assert labels == {"background": 0, "VS": 1, "cochlea": 2, "ignore": 3}
    complete = folders_in(tmp_path / "other")
    write_raw_dataset(complete, [TrainingCase("b", image, image)])
    assert "ignore" not in json.loads((complete.raw_dataset / "dataset.json").read_text())["labels"]
    values[2, 2, 2] = 4
    save(values, tmp_path / "a_Label.nii.gz")
    with pytest.raises(DatasetError, match=r"holds values \[4\] outside \{0 background, 1 VS, 2 cochlea, 3 unlabelled\}"):
        write_raw_dataset(folders_in(tmp_path / "third"), [TrainingCase("a", image, label, partial=True)])


def test_duplicate_and_malformed_case_ids(cohort, tmp_path: Path) -> None:
    case = stand_in_cases(cohort)[0]
    with pytest.raises(DatasetError, match="given more than once"):
        write_raw_dataset(folders_in(tmp_path), [case, case])
    with pytest.raises(DatasetError, match="may only hold"):
        write_raw_dataset(folders_in(tmp_path), [TrainingCase("bad id/1", case.image, case.label)])


def test_folds_keep_the_views_of_a_subject_together() -> None:
    cases = [TrainingCase(f"s{i}__{view}", Path("x"), Path("y")) for i in range(6) for view in ("tanq", "cyclegan")]
    cases += [TrainingCase("real_hrT2_1", Path("x"), Path("y"))]
    splits = fold_splits(cases, 3)
    assert len(splits) == 3
    held_out = [case for split in splits for case in split["val"]]
    assert sorted(held_out) == sorted(c.case_id for c in cases)  # every case validated exactly once
    for split in splits:
        assert not set(split["train"]) & set(split["val"])
        for case in split["val"]:
            if "__" in case:
                subject = case.split("__")[0]
                assert {f"{subject}__tanq", f"{subject}__cyclegan"} <= set(split["val"])


def test_one_fold_is_an_80_20_split_and_too_few_subjects_fail() -> None:
    cases = [TrainingCase(f"s{i}", Path("x"), Path("y")) for i in range(10)]
    [split] = fold_splits(cases, 1)
    assert (len(split["train"]), len(split["val"])) == (8, 2)
    with pytest.raises(DatasetError, match="needs at least 5 subjects, got 4"):
        fold_splits(cases[:4], 5)


def test_refine_keeps_largest_vs_and_drops_unsure_voxels() -> None:
    label = np.zeros((12, 12, 6), np.uint8)
    label[1:5, 1:5, 1:4] = 1  # large VS
    label[9:11, 9:11, 4] = 1  # small stray VS blob
    label[8, 1, 1] = 2  # cochlea, confident
    label[8, 3, 1] = 2  # cochlea, unsure
    probabilities = np.zeros((3, *label.shape), np.float32)
    for value in range(3):
        probabilities[value][label == value] = 0.9
    probabilities[2, 8, 3, 1] = 0.4
    refined = refine_label(label, probabilities, min_confidence=0.5)
    assert refined[1:5, 1:5, 1:4].min() == 1
    assert refined[9:11, 9:11, 4].max() == 0
    assert refined[8, 1, 1] == 2 and refined[8, 3, 1] == 0


def confident(label: np.ndarray) -> np.ndarray:
    probabilities = np.zeros((3, *label.shape), np.float32)
    for value in range(3):
        probabilities[value][label == value] = 0.95
    return probabilities


def source_label(tmp_path: Path, name: str, vs_box: tuple[slice, slice, slice], spacing: float = 2.0) -> Path:
    """A 20 x 20 x 10 ROI label volume (``spacing`` mm voxels) with a VS in ``vs_box``."""
    label = np.zeros((20, 20, 10), np.uint8)
    label[vs_box] = 1
    image = nib.Nifti1Image(label, np.diag([spacing, spacing, spacing, 1.0]))
    nib.save(image, str(tmp_path / name))
    return tmp_path / name


def test_vs_location_rule_keeps_the_component_where_source_scans_have_a_vs(tmp_path: Path) -> None:
    # source VS left of centre (x 4-6 of 20); its mirror image covers x 13-15
    prior = VsLocationPrior.from_labels([source_label(tmp_path, "s.nii.gz", (slice(4, 7), slice(9, 12), slice(4, 6)))], 2.0)
    label = np.zeros((20, 20, 10), np.uint8)
    label[13:16, 9:12, 4:6] = 1  # small VS on the mirrored side: plausible
    label[8:12, 0:5, 0:10] = 1  # larger grey region at the front, far from any source VS
    refined = refine_label(label, confident(label), 0.0, (2.0, 2.0, 2.0), prior)
    assert refined[13:16, 9:12, 4:6].min() == 1
    assert refined[8:12, 0:5, 0:10].max() == 0
    # without the rule the larger region wins
    plain = refine_label(label, confident(label), 0.0)
    assert plain[8:12, 0:5, 0:10].min() == 1 and plain[13:16, 9:12, 4:6].max() == 0
    # the same offsets in mm, on a grid of another spacing, are judged the same way
    finer = np.zeros((40, 40, 20), np.uint8)
    finer[27:31, 18:22, 8:12] = 1  # mirrored side at 1 mm voxels
    assert refine_label(finer, confident(finer), 0.0, (1.0, 1.0, 1.0), prior)[27:31, 18:22, 8:12].min() == 1


def test_vs_location_rule_drops_every_implausible_vs_and_keeps_the_cochlea(tmp_path: Path) -> None:
    prior = VsLocationPrior.from_labels([source_label(tmp_path, "s.nii.gz", (slice(4, 7), slice(9, 12), slice(4, 6)))], 2.0)
    label = np.zeros((20, 20, 10), np.uint8)
    label[8:12, 0:5, 0:10] = 1
    label[2, 15, 5] = 2
    refined = refine_label(label, confident(label), 0.0, (2.0, 2.0, 2.0), prior)
    assert (refined == 1).sum() == 0 and refined[2, 15, 5] == 2


def source_cochleae(tmp_path: Path, name: str, boxes: list[tuple[slice, slice, slice]]) -> Path:
    """A 20 x 20 x 10 ROI label volume of 2 mm voxels with a cochlea in each of ``boxes``."""
    label = np.zeros((20, 20, 10), np.uint8)
    for box in boxes:
        label[box] = 2
    nib.save(nib.Nifti1Image(label, np.diag([2.0, 2.0, 2.0, 1.0])), str(tmp_path / name))
    return tmp_path / name


def test_cochlea_rule_keeps_per_side_the_component_nearest_the_source_position(tmp_path: Path) -> None:
    # the source scans have their cochleae at x 2 and x 17 (one on each side), y 12, z 5
    position = CochleaPosition.from_labels(
        [source_cochleae(tmp_path, "a.nii.gz", [(slice(2, 3), slice(12, 13), slice(5, 6))]),
         source_cochleae(tmp_path, "b.nii.gz", [(slice(17, 18), slice(12, 13), slice(5, 6))])]
    )  # fmt: skip
    label = np.zeros((20, 20, 10), np.uint8)
    label[3, 11, 5] = 2  # a cochlea near the source position, left
    label[4:7, 2:5, 0:3] = 2  # a larger bright spot far from it, left
    label[16, 13, 4] = 2  # a cochlea near the mirrored position, right
    label[14, 2, 9] = 2  # a spot far from it, right
    label[9, 10, 5] = 1  # a VS is left alone
    refined = refine_label(label, confident(label), 0.0, (2.0, 2.0, 2.0), cochlea_position=position)
    assert refined[3, 11, 5] == 2 and refined[16, 13, 4] == 2
    assert refined[4:7, 2:5, 0:3].max() == 0 and refined[14, 2, 9] == 0
    assert refined[9, 10, 5] == 1
    assert (refine_label(label, confident(label), 0.0) == label).all()  # without the rule every component stays


def test_cochlea_rule_needs_a_source_cochlea_and_a_spacing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no labelled source scan has a cochlea voxel"):
        CochleaPosition.from_labels([source_cochleae(tmp_path, "a.nii.gz", [])])
    position = CochleaPosition.from_labels([source_cochleae(tmp_path, "b.nii.gz", [(slice(2, 3), slice(12, 13), slice(5, 6))])])
    label = np.zeros((20, 20, 10), np.uint8)
    with pytest.raises(ValueError, match="need the label's voxel spacing"):
        refine_label(label, confident(label), 0.0, cochlea_position=position)


def test_vs_location_prior_needs_a_source_vs(tmp_path: Path) -> None:
    empty = source_label(tmp_path, "s.nii.gz", (slice(0, 0), slice(0, 0), slice(0, 0)))
    with pytest.raises(ValueError, match="no labelled source scan has a VS voxel"):
        VsLocationPrior.from_labels([empty], 2.0)
    with pytest.raises(ValueError, match="must be >= 0 mm"):
        VsLocationPrior.from_labels([empty], -1.0)


def fluid_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 20 x 20 x 10 hrT2 (brain 0.3, CSF 1.0, a VS at 0.55 of CSF) and a prediction that calls fluid VS.

    The prediction draws the VS together with the cistern it touches, and a
    larger, separate VS on the healthy canal (pure fluid).
    """
    image = np.full((20, 20, 10), 0.3, np.float32)
    image[4:8, 8:12, 3:7] = 0.55  # the VS
    image[8:10, 8:12, 3:7] = 1.0  # the cistern beside it
    image[12:17, 8:12, 2:8] = 1.0  # the healthy canal on the other side
    image[0, 0, 0] = 10.0  # one hot voxel (a flow artefact) does not set the fluid level
    label = np.zeros(image.shape, np.uint8)
    label[4:10, 8:12, 3:7] = 1  # VS + cistern, one component of 96 voxels
    label[12:17, 8:12, 2:8] = 1  # fluid only, 120 voxels: the largest
    return image, label


def test_fluid_rule_keeps_the_vs_and_drops_what_is_as_bright_as_csf() -> None:
    image, label = fluid_scene()
    refined = refine_label(label, confident(label), 0.0, image=image, vs_max_fluid_share=0.8)
    assert refined[4:8, 8:12, 3:7].min() == 1  # the VS part of the component it shares with the cistern
    assert refined[8:10, 8:12, 3:7].max() == 0 and refined[12:17, 8:12, 2:8].max() == 0
    # without the rule the fluid wins, as the largest component
    plain = refine_label(label, confident(label), 0.0)
    assert plain[12:17, 8:12, 2:8].min() == 1 and plain[4:8, 8:12, 3:7].max() == 0
    # the level is the scan's own: the same scene at another gain is judged the same way
    np.testing.assert_array_equal(refine_label(label, confident(label), 0.0, image=image * 700, vs_max_fluid_share=0.8), refined)


def test_fluid_rule_needs_the_scan_it_judges(tmp_path: Path) -> None:
    image, label = fluid_scene()
    with pytest.raises(ValueError, match="needs the hrT2 volume of the label's shape"):
        refine_label(label, confident(label), 0.0, vs_max_fluid_share=0.8)
    with pytest.raises(ValueError, match=r"got an image of shape \(20, 20, 9\)"):
        refine_label(label, confident(label), 0.0, image=image[..., :9], vs_max_fluid_share=0.8)
    path = save(label, tmp_path / "a.nii.gz")
    np.savez_compressed(probabilities_path(path), probabilities=confident(label).astype(np.float16))
    with pytest.raises(ValueError, match="case 'a': the fluid rule needs the hrT2 volume"):
        refine_pseudo_labels({"a": path}, tmp_path / "refined", 0.0, vs_max_fluid_share=0.8)
    with pytest.raises(ValueError, match=r"vs_max_fluid_share must be within \(0, 1\]"):
        refine_pseudo_labels({"a": path}, tmp_path / "refined", 0.0, vs_max_fluid_share=1.5)
    refined = refine_pseudo_labels(
        {"a": path}, tmp_path / "refined", 0.0, images={"a": save(image, tmp_path / "a_0000.nii.gz")}, vs_max_fluid_share=0.8
    )
    assert (np.asarray(nib.load(str(refined["a"])).dataobj) == 1).sum() == 4 * 4 * 4


def test_refine_needs_the_saved_probabilities(tmp_path: Path) -> None:
    label = save(np.ones((4, 4, 2), np.uint8), tmp_path / "a.nii.gz")
    with pytest.raises(FileNotFoundError, match="a.npz' does not exist; predict with save_probabilities=True"):
        refine_pseudo_labels({"a": label}, tmp_path / "refined")
    np.savez_compressed(probabilities_path(label), probabilities=np.full((3, 4, 4, 2), 0.2, np.float16))
    refined = refine_pseudo_labels({"a": label}, tmp_path / "refined")
    assert np.asarray(nib.load(str(refined["a"])).dataobj).max() == 0  # all unsure -> background
