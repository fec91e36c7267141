"""Evaluation: Dice/ASSD against hand-derived values, per-case scoring, folder evaluation, statistics."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from conftest import save_nifti
from tanq_ray.evaluate import (
    CROSSMODA,
    CROSSMODA_EMPTY_PREDICTION_ASSD_MM,
    POOLED,
    EvaluationError,
    ScoringConvention,
    assd,
    comparison_table,
    gap_closed,
    dice,
    evaluate_folder,
    load_per_case,
    paired_ttest,
    score_case,
    scoring_convention,
)

SPACING = (0.5, 0.5, 2.0)
AFFINE = np.diag([*SPACING, 1.0])


def cube(shape: tuple[int, int, int] = (8, 8, 8), shift: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """A 3x3x3 cube at voxels 2..4 (+ shift) per axis."""
    mask = np.zeros(shape, bool)
    mask[tuple(slice(2 + s, 5 + s) for s in shift)] = True
    return mask


def label_volume(vs: np.ndarray, cochlea: np.ndarray) -> np.ndarray:
    return np.where(vs, 1, np.where(cochlea, 2, 0)).astype(np.uint8)


# --- metrics -----------------------------------------------------------------------------------


def test_dice_of_a_shifted_cube_and_of_empty_masks() -> None:
    # 3x3x3 cubes shifted by one voxel overlap in 18 voxels: 2 * 18 / (27 + 27).
    assert dice(cube(), cube(shift=(1, 0, 0))) == pytest.approx(2 / 3)
    assert dice(cube(), cube()) == 1.0
    empty = np.zeros((8, 8, 8), bool)
    assert dice(empty, empty) == 1.0  # absence correctly predicted (medpy's dc would say 0.0)
    assert dice(cube(), empty) == 0.0
    assert dice(empty, cube()) == 0.0
    with pytest.raises(ValueError, match="shape"):
        dice(cube(), cube(shape=(8, 8, 9)))


@pytest.mark.parametrize("convention", [CROSSMODA, POOLED], ids=lambda c: c.name)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_assd_of_a_one_voxel_shift_matches_the_hand_value(axis: int, convention: ScoringConvention) -> None:
    # Each cube's surface is its 26 non-centre voxels. Shifting by one voxel along `axis`:
    # the 9 trailing-face voxels are one step (SPACING[axis] mm) from the other surface, the
    # voxel in the other cube's centre is 0.5 mm (the smallest spacing) away, the other 16 lie on it.
    # Same on both sides, so both directions average (9 * s + 0.5) / 26 and the mean of the two
    # equals the pooled (2 * (9 * s + 0.5)) / 52: the conventions agree on equal-sized surfaces.
    shift = tuple(1 if a == axis else 0 for a in range(3))
    expected = (9 * SPACING[axis] + 0.5) / 26
    assert assd(cube(), cube(shift=shift), SPACING, convention) == pytest.approx(expected, abs=1e-12)
    assert assd(cube(shift=shift), cube(), SPACING, convention) == pytest.approx(expected, abs=1e-12)


def test_assd_conventions_differ_on_unequal_surfaces_of_a_row_of_voxels() -> None:
    # One voxel thick along axis 0, so every voxel is surface and axis 0's 3 mm never enters.
    # Truth: z = 0..3 at y = 0; prediction: z = 0..1 at y = 1. Steps are 1 mm in y, 2 mm in z.
    truth = np.zeros((1, 2, 4), bool)
    truth[0, 0, :] = True
    prediction = np.zeros((1, 2, 4), bool)
    prediction[0, 1, :2] = True
    spacing = (3.0, 1.0, 2.0)
    # prediction -> truth: both voxels sit 1 mm above a truth voxel: 1 + 1, mean 1.
    # truth -> prediction: z = 0, 1: 1 mm; z = 2: sqrt(1^2 + 2^2) = sqrt(5) to (y 1, z 1);
    #                      z = 3: sqrt(1^2 + 4^2) = sqrt(17); sum 2 + sqrt(5) + sqrt(17), mean that / 4.
    to_truth, to_prediction = 2.0, 2 + math.sqrt(5) + math.sqrt(17)
    mean_of_directions = (to_truth / 2 + to_prediction / 4) / 2  # 1.5449 mm (medpy's assd)
    pooled = (to_truth + to_prediction) / (2 + 4)  # 1.7265 mm
    assert assd(prediction, truth, spacing) == pytest.approx(mean_of_directions, abs=1e-12)
    assert assd(truth, prediction, spacing) == pytest.approx(mean_of_directions, abs=1e-12)
    assert assd(prediction, truth, spacing, POOLED) == pytest.approx(pooled, abs=1e-12)
    assert mean_of_directions == pytest.approx(1.5449, abs=1e-4) and pooled == pytest.approx(1.7265, abs=1e-4)


def test_assd_of_a_cube_against_its_centre_voxel_with_anisotropic_spacing() -> None:
    # Truth: the 3x3x3 cube, surface = its 26 non-centre voxels (the erosion keeps the centre).
    # Prediction: the centre voxel alone, its own surface. Spacing (0.5, 1, 2) mm.
    spacing = (0.5, 1.0, 2.0)
    centre = np.zeros((8, 8, 8), bool)
    centre[3, 3, 3] = True
    # centre -> truth surface: nearest is a face neighbour along x, 0.5 mm (1 voxel, mean 0.5).
    # truth surface -> centre, by the offset's non-zero axes (count x distance):
    #   x: 2 x 0.5, y: 2 x 1, z: 2 x 2, xy: 4 x sqrt(1.25), xz: 4 x sqrt(4.25), yz: 4 x sqrt(5),
    #   xyz: 8 x sqrt(5.25); sum 46.9929 over 26 voxels.
    to_truth = 0.5
    to_centre = 1 + 2 + 4 + 4 * (math.sqrt(1.25) + math.sqrt(4.25) + math.sqrt(5)) + 8 * math.sqrt(5.25)
    assert to_centre == pytest.approx(46.9929, abs=1e-4)
    expected_crossmoda = (to_truth / 1 + to_centre / 26) / 2  # 1.1537 mm
    expected_pooled = (to_truth + to_centre) / (1 + 26)  # 1.7590 mm
    assert assd(centre, cube(), spacing) == pytest.approx(expected_crossmoda, abs=1e-12)
    assert assd(centre, cube(), spacing, POOLED) == pytest.approx(expected_pooled, abs=1e-12)


def test_assd_of_empty_masks_follows_the_convention() -> None:
    empty = np.zeros((8, 8, 8), bool)
    for convention in (CROSSMODA, POOLED):
        assert assd(empty, empty, SPACING, convention) == 0.0
        assert assd(cube(), cube(), SPACING, convention) == 0.0
    assert CROSSMODA_EMPTY_PREDICTION_ASSD_MM == 350.0  # the challenge's MAX_VALUE_ASSD
    assert assd(empty, cube(), SPACING) == 350.0  # structure missed: the challenge's fixed penalty
    assert assd(cube(), empty, SPACING) == 350.0  # structure invented (truth empty): our rule, same penalty
    assert math.isnan(assd(empty, cube(), SPACING, POOLED))
    assert math.isnan(assd(cube(), empty, SPACING, POOLED))
    with pytest.raises(ValueError, match="spacing"):
        assd(cube(), cube(), (0.5, 0.5))


def test_scoring_convention_is_found_by_name() -> None:
    assert scoring_convention("crossmoda") is CROSSMODA and scoring_convention("pooled") is POOLED
    with pytest.raises(ValueError, match=r"'medpy'.*\['crossmoda', 'pooled'\]"):
        scoring_convention("medpy")


def _brute_force_distances(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs distances between surfaces found by looking at each voxel's six neighbours:
    each prediction surface voxel's distance to the truth surface, and each truth surface voxel's to the prediction's."""

    def boundary(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        inner = np.ones_like(mask)
        for axis in range(3):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(mask & ~inner) * np.asarray(spacing)

    distances = cdist(boundary(prediction), boundary(truth))
    return distances.min(axis=1), distances.min(axis=0)


def test_cropped_assd_equals_all_pairs_distances_for_blobs_touching_the_border() -> None:
    rng = np.random.default_rng(3)
    x, y, z = np.ogrid[:24, :20, :10]
    truth = (x - 3) ** 2 + (y - 9) ** 2 + ((z - 4) * 2) ** 2 < 30  # touches the x = 0 face
    prediction = ((x - 5) ** 2 + (y - 11) ** 2 + ((z - 5) * 2) ** 2 < 36) ^ (rng.random(truth.shape) < 0.02)
    spacing = (0.41, 0.6, 1.5)
    to_truth, to_prediction = _brute_force_distances(prediction, truth, spacing)
    assert to_truth.size != to_prediction.size  # so the two conventions differ here
    mean_of_directions = (to_truth.mean() + to_prediction.mean()) / 2
    pooled = np.concatenate([to_truth, to_prediction]).mean()
    assert assd(prediction, truth, spacing) == pytest.approx(mean_of_directions, rel=1e-9)
    assert assd(prediction, truth, spacing, POOLED) == pytest.approx(pooled, rel=1e-9)


# --- scoring one case --------------------------------------------------------------------------


def test_score_case_uses_the_header_spacing_per_class(tmp_path: Path) -> None:
    truth = save_nifti(label_volume(cube((10, 10, 10)), cube((10, 10, 10), (4, 4, 4))), tmp_path / "c1_Label.nii.gz", AFFINE)
    prediction = label_volume(cube((10, 10, 10), (0, 0, 1)), cube((10, 10, 10), (4, 4, 4)))
    scores = score_case(save_nifti(prediction, tmp_path / "c1.nii.gz", AFFINE), truth)
    assert scores["case_id"] == "c1"
    assert scores["dice_vs"] == pytest.approx(2 / 3)
    assert scores["assd_vs"] == pytest.approx(2 * (9 * 2.0 + 0.5) / 52)  # shift along z, 2 mm voxels
    assert scores["dice_cochlea"] == 1.0
    assert scores["assd_cochlea"] == 0.0


@pytest.mark.parametrize(
    ("convention", "invented_assd"), [(CROSSMODA, 350.0), (POOLED, math.nan)], ids=["crossmoda", "pooled"]
)
def test_score_case_without_a_true_cochlea(tmp_path: Path, convention: ScoringConvention, invented_assd: float) -> None:
    """Cases the challenge never scores: the truth has no cochlea; one prediction has none either, one invents it."""
    vs, cochlea, nothing = cube((10, 10, 10)), cube((10, 10, 10), (4, 4, 4)), np.zeros((10, 10, 10), bool)
    truth = save_nifti(label_volume(vs, nothing), tmp_path / "c1_Label.nii.gz", AFFINE)
    absent = score_case(save_nifti(label_volume(vs, nothing), tmp_path / "absent.nii.gz", AFFINE), truth, convention)
    assert (absent["dice_cochlea"], absent["assd_cochlea"]) == (1.0, 0.0)  # absence correctly predicted
    invented = score_case(save_nifti(label_volume(vs, cochlea), tmp_path / "invented.nii.gz", AFFINE), truth, convention)
    assert invented["dice_cochlea"] == 0.0
    assert invented["assd_cochlea"] == pytest.approx(invented_assd, nan_ok=True)


def test_score_case_rejects_mismatched_grids_and_bad_labels(tmp_path: Path) -> None:
    truth = save_nifti(label_volume(cube(), cube(shift=(3, 3, 3))), tmp_path / "c1_Label.nii.gz", AFFINE)
    other_shape = save_nifti(np.zeros((8, 8, 9), np.uint8), tmp_path / "shape.nii.gz", AFFINE)
    with pytest.raises(EvaluationError, match="shape") as error:
        score_case(other_shape, truth)
    assert "shape.nii.gz" in str(error.value) and "c1_Label.nii.gz" in str(error.value)

    moved = AFFINE.copy()
    moved[0, 3] = 0.01
    other_affine = save_nifti(label_volume(cube(), cube(shift=(3, 3, 3))), tmp_path / "affine.nii.gz", moved)
    with pytest.raises(EvaluationError, match="affine") as error:
        score_case(other_affine, truth)
    assert "affine.nii.gz" in str(error.value) and "c1_Label.nii.gz" in str(error.value)

    bad_values = save_nifti(cube().astype(np.uint8) * 3, tmp_path / "bad.nii.gz", AFFINE)
    with pytest.raises(EvaluationError, match=r"bad\.nii\.gz.*label values.*\[3\]"):
        score_case(bad_values, truth)


# --- evaluating a folder -----------------------------------------------------------------------


@pytest.fixture
def scored_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Truth for cases a and b; predictions for a (VS shifted along x), b (cochlea missed) and an extra case."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    vs, cochlea = cube((10, 10, 10)), cube((10, 10, 10), (4, 4, 4))
    for case in ("a", "b"):
        save_nifti(label_volume(vs, cochlea), gt_dir / f"{case}_Label.nii.gz", AFFINE)
    save_nifti(label_volume(cube((10, 10, 10), (1, 0, 0)), cochlea), pred_dir / "a.nii.gz", AFFINE)
    save_nifti(label_volume(vs, np.zeros_like(vs)), pred_dir / "b.nii.gz", AFFINE)
    save_nifti(label_volume(vs, cochlea), pred_dir / "extra.nii.gz", AFFINE)
    return pred_dir, gt_dir


def test_evaluate_folder_writes_per_case_and_summary(scored_folders: tuple[Path, Path], caplog) -> None:
    pred_dir, gt_dir = scored_folders
    with caplog.at_level(logging.WARNING):
        evaluation = evaluate_folder(pred_dir, gt_dir, parallel=False)
    assert "extra" in caplog.text

    assert evaluation.per_case_path == pred_dir / "per_case.csv"
    assert [row["case_id"] for row in load_per_case(evaluation.per_case_path)] == ["a", "b"]
    a, b = load_per_case(evaluation.per_case_path)
    shift_x = 2 * (9 * 0.5 + 0.5) / 52
    assert a["dice_vs"] == pytest.approx(2 / 3) and a["assd_vs"] == pytest.approx(shift_x)
    assert b["dice_cochlea"] == 0.0 and b["assd_cochlea"] == 350.0  # cochlea missed: the challenge's penalty

    summary = json.loads(evaluation.summary_path.read_text())
    assert summary["convention"] == "crossmoda" and evaluation.convention is CROSSMODA
    assert summary["n_cases"] == 2
    assert summary["dice_vs"] == pytest.approx((2 / 3 + 1) / 2)
    assert summary["dice_vs_std"] == pytest.approx(1 / 6)
    assert summary["dice_cochlea"] == pytest.approx(0.5)
    assert summary["dice_mean"] == pytest.approx((summary["dice_vs"] + summary["dice_cochlea"]) / 2)
    assert summary["assd_vs"] == pytest.approx(shift_x / 2)
    assert summary["assd_cochlea"] == pytest.approx((0 + 350) / 2)  # case b's 350 mm counts in the mean
    assert summary["assd_cochlea_std"] == pytest.approx(175.0)  # population std of {0, 350}
    assert summary["assd_cochlea_undefined"] == summary["assd_vs_undefined"] == 0
    assert "convention" not in evaluation.summary  # numbers only: callers log it as metrics
    assert evaluation.summary == pytest.approx({k: v for k, v in summary.items() if k != "convention"})


def test_evaluate_folder_under_the_pooled_convention_leaves_a_missed_structure_undefined(
    scored_folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pred_dir, gt_dir = scored_folders
    evaluation = evaluate_folder(pred_dir, gt_dir, tmp_path / "pooled", parallel=False, convention=POOLED)
    a, b = load_per_case(evaluation.per_case_path)
    assert a["assd_vs"] == pytest.approx(2 * (9 * 0.5 + 0.5) / 52)  # equal surfaces: same as crossmoda
    assert b["dice_cochlea"] == 0.0 and math.isnan(b["assd_cochlea"])
    summary = json.loads(evaluation.summary_path.read_text())
    assert summary["convention"] == "pooled"
    assert summary["assd_cochlea"] == 0.0  # case b's undefined ASSD is left out ...
    assert summary["assd_cochlea_undefined"] == 1  # ... and counted
    assert summary["assd_vs_undefined"] == 0


def test_tanq_evaluate_scores_under_the_convention_it_is_given(scored_folders: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    from tanq_ray.cli import main

    pred_dir, gt_dir = scored_folders
    tables = {}
    for name in ("crossmoda", "pooled"):
        main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(tmp_path / name), "--convention", name])
        assert json.loads((tmp_path / name / "summary.json").read_text())["convention"] == name
        tables[name] = capsys.readouterr().out
    assert "| 175.0000 ± 175.0000 |" in tables["crossmoda"]  # case b's missed cochlea costs 350 mm: mean of 0 and 350
    assert "175.0000" not in tables["pooled"]


def test_evaluate_folder_lists_missing_predictions(scored_folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred_dir, gt_dir = scored_folders
    for case in ("c", "d"):
        save_nifti(np.zeros((10, 10, 10), np.uint8), gt_dir / f"{case}_Label.nii.gz", AFFINE)
    with pytest.raises(EvaluationError, match="lacks 2 of 4 ground-truth cases: c, d"):
        evaluate_folder(pred_dir, gt_dir, tmp_path / "out", parallel=False)
    assert not (tmp_path / "out").exists()


def test_evaluate_folder_scores_cases_as_ray_tasks(ray_local, scored_folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred_dir, gt_dir = scored_folders
    sequential = evaluate_folder(pred_dir, gt_dir, tmp_path / "sequential", parallel=False)
    parallel = evaluate_folder(pred_dir, gt_dir, tmp_path / "parallel", parallel=True)
    assert parallel.per_case_path.read_text() == sequential.per_case_path.read_text()

    (pred_dir / "b.nii.gz").write_bytes(b"not a NIfTI file")
    with pytest.raises(ray_local.exceptions.RayTaskError, match=r"b\.nii\.gz.*cannot be read"):
        evaluate_folder(pred_dir, gt_dir, tmp_path / "broken", parallel=True)


def test_load_per_case_names_the_file_and_the_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "per_case.csv"
    path.write_text("case_id,dice_vs\na,0.5\n")
    with pytest.raises(EvaluationError, match=r"per_case\.csv.*missing columns \['dice_cochlea'"):
        load_per_case(path)


# --- statistics --------------------------------------------------------------------------------


def rows(values: dict[str, tuple[float, float, float, float]]) -> list[dict]:
    keys = ("dice_vs", "dice_cochlea", "assd_vs", "assd_cochlea")
    return [{"case_id": case, **dict(zip(keys, v))} for case, v in values.items()]


def test_paired_ttest_matches_the_hand_computed_t_and_p() -> None:
    nan = math.nan
    a = rows({"x": (0, 0, 2, 0), "y": (0, 0, 4, 0), "z": (0, 0, 6, 0), "only_a": (0, 0, 9, 0), "undef": (0, 0, nan, 0)})
    b = rows({"x": (0, 0, 1, 0), "y": (0, 0, 2, 0), "z": (0, 0, 3, 0), "undef": (0, 0, 1, 0)})
    test = paired_ttest(a, b, "assd_vs")
    # Differences 1, 2, 3: mean 2, sample std 1, t = 2 / (1 / sqrt(3)); for 2 degrees of
    # freedom the two-sided p-value is 1 - t / sqrt(t^2 + 2).
    t = 2 * math.sqrt(3)
    assert (test.metric, test.n, test.mean_difference) == ("assd_vs", 3, pytest.approx(2.0))
    assert test.t == pytest.approx(t)
    assert test.p == pytest.approx(1 - t / math.sqrt(t**2 + 2))
    with pytest.raises(ValueError, match="share no case_id"):
        paired_ttest(a, rows({"w": (0, 0, 1, 0)}), "assd_vs")


def test_comparison_table_reports_mean_std_and_p_against_the_reference() -> None:
    tanq = rows({"x": (0.9, 0.8, 0.4, 0.1), "y": (0.7, 0.8, 0.6, 0.3), "z": (0.8, 0.9, 0.5, 0.2)})
    cyclegan = rows({"x": (0.8, 0.7, 0.5, 0.2), "y": (0.7, 0.6, 0.7, 0.4), "z": (0.6, 0.8, 0.6, 0.3)})
    table = comparison_table({"TANQ": tanq, "CycleGAN": cyclegan}, reference="CycleGAN")
    assert list(table.columns[:6]) == ["run", "Dice VS", "Dice cochlea", "Dice mean", "ASSD VS", "ASSD cochlea"]
    first, second = table.rows
    assert first["run"] == "TANQ"
    assert first["Dice VS"] == f"0.8000 ± {math.sqrt(2 / 300):.4f}"
    assert first["ASSD cochlea"] == f"0.2000 ± {math.sqrt(2 / 300):.4f}"
    assert first["Dice mean"] == f"{np.mean([0.85, 0.75, 0.85]):.4f} ± {np.std([0.85, 0.75, 0.85]):.4f}"
    assert first["dice_cochlea"] == pytest.approx((0.8 + 0.8 + 0.9) / 3)
    assert first["n_cases"] == 3
    p_column = "p (Dice mean vs CycleGAN)"
    assert first[p_column] == pytest.approx(paired_ttest(tanq, cyclegan, "dice_mean").p)
    assert second[p_column] is None
    assert "| TANQ | 0.8000 ± " in table.markdown()
    with pytest.raises(ValueError, match="run 'CUT' is not among"):
        comparison_table({"TANQ": tanq}, reference="CUT")


def test_gap_closed_places_each_row_between_the_reference_rows() -> None:
    """(row - source-only) / (target-supervised - source-only) on mean Dice, by hand."""
    lower = rows({"x": (0.2, 0.0, 1, 1), "y": (0.4, 0.2, 1, 1)})  # mean Dice 0.2
    middle = rows({"x": (0.6, 0.4, 1, 1), "y": (0.6, 0.4, 1, 1)})  # 0.5
    upper = rows({"x": (0.9, 0.7, 1, 1), "y": (0.9, 0.7, 1, 1)})  # 0.8
    table = comparison_table({"source-only": lower, "ours": middle, "target": upper}, bounds=("source-only", "target"))
    assert [row["gap closed"] for row in table.rows] == [pytest.approx(0.0), pytest.approx(0.5), pytest.approx(1.0)]
    assert math.isnan(gap_closed(0.5, 0.3, 0.3))
    with pytest.raises(ValueError, match="run 'target' is not among"):
        comparison_table({"source-only": lower}, bounds=("source-only", "target"))
