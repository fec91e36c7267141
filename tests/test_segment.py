"""nnUNet on Ray end to end on a tiny phantom: train 2 folds of 2d, select, log, predict, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from mlflow import MlflowClient

from tanq_ray.config import IngestConfig, SegmentConfig
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.data.roi import paste_back, read_geometry
from tanq_ray.segment import (
    Segmenter,
    TrainingCase,
    load_segmenter,
    predict_volumes,
    probabilities_path,
    refine_pseudo_labels,
    train_segmenter,
)
from tanq_ray.run_ref import RunRef
from tanq_ray.segment.folders import NnUNetFolders
from tanq_ray.segment.folds import run_folds
from tanq_ray.segment.refine import refine_label
from tanq_ray.segment.roi_volumes import ROI_FOLDER, VolumeToCut, cut_rois
from tanq_ray.self_training import refinement_rules, segment_and_refine


# A tiny schedule: 2 folds of 2d, 2 epochs x 5 iterations, batch 4 (3 drawn around a structure, VS or cochlea at
# fixed shares), structures at random contrasts, no test-time mirroring.
TINY = SegmentConfig(
    configurations=["2d"], folds=2, epochs=2, iterations_per_epoch=5, batch_size=4, foreground_oversampling=0.75,
    vs_patch_share=0.5, structure_contrast=(-0.5, 2.0), test_time_mirroring=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    return generate_cohort(tmp_path_factory.mktemp("phantom"), cases=4, eval_cases=2, size=48, seed=0)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> RunRef:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("segment-tests")
    parent = client.create_run(experiment_id, run_name="segment", tags={"stage": "segment"})
    return RunRef(uri, experiment_id, parent.info.run_id)


@pytest.fixture(scope="module")
def trained(ray_local, cohort, tracking: RunRef, tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    train = cohort.train_dir
    cases = [TrainingCase(c, train / f"{c}_ceT1.nii.gz", train / f"{c}_Label.nii.gz") for c in cohort.labelled_cases]
    start = time.perf_counter()
    segmenter = train_segmenter(TINY, tmp_path_factory.mktemp("segment"), cases, logging=tracking, use_gpu=False)
    print(f"train_segmenter, 2 folds of 2d on 2 CPUs: {time.perf_counter() - start:.1f} s")
    return segmenter


def test_train_segmenter_trains_every_fold_and_selects(trained: Segmenter) -> None:
    assert trained.configurations == ("2d",)
    assert trained.folds == (0, 1)
    assert trained.trained
    assert [(r.configuration, r.fold, r.trained, r.start_epoch) for r in trained.fold_results] == [
        ("2d", 0, True, 0),
        ("2d", 1, True, 0),
    ]
    for fold in trained.folds:
        fold_dir = trained.folders.fold_dir("2d", fold)
        assert (fold_dir / "checkpoint_final.pth").is_file()
        assert (fold_dir / "validation" / "summary.json").is_file()
        debug = json.loads((fold_dir / "debug.json").read_text())  # what nnUNet's trainer ran with
        assert float(debug["oversample_foreground_percent"]) == 0.75 and int(debug["batch_size"]) == 4
        assert "SpatialTransform -> StructureContrastTransform" in debug["training_augmentation"]
    assert trained.postprocessing_file.is_file()
    assert set(trained.cv_dice) == {"TanqTrainer__nnUNetPlans__2d"}
    assert load_segmenter(trained.work_dir) == trained


def test_saved_segmenter_follows_its_work_folder(trained: Segmenter, tmp_path: Path) -> None:
    shutil.copy(trained.work_dir / "segmenter.json", tmp_path / "segmenter.json")
    moved = load_segmenter(tmp_path)
    assert moved.work_dir == tmp_path.resolve()
    assert moved.postprocessing_file == tmp_path.resolve() / trained.postprocessing_file.relative_to(trained.work_dir)
    assert moved.configurations == trained.configurations and moved.fold_results == trained.fold_results


def test_schedule_without_test_time_mirroring_reaches_the_checkpoint(trained: Segmenter) -> None:
    import torch

    checkpoint = torch.load(trained.folders.fold_dir("2d", 0) / "checkpoint_final.pth", weights_only=False)
    assert checkpoint["trainer_name"] == "TanqTrainer"
    assert checkpoint["current_epoch"] == TINY.epochs
    assert checkpoint["inference_allowed_mirroring_axes"] is None  # TINY turns test-time mirroring off


def test_each_fold_logs_its_epochs_to_a_child_run(trained: Segmenter, tracking: RunRef) -> None:
    client = MlflowClient(tracking.tracking_uri)
    runs = client.search_runs(
        [tracking.experiment_id], f"tags.mlflow.parentRunId = '{tracking.run_id}' and tags.stage = 'fold'"
    )
    assert sorted((r.data.tags["configuration"], r.data.tags["fold"]) for r in runs) == [("2d", "0"), ("2d", "1")]
    metric_names = []
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == [0, 1]
        assert all(np.isfinite(m.value) for m in history)
        metric_names.append(set(run.data.metrics))
    assert metric_names[0] == metric_names[1]
    expected = {"val_loss", "pseudo_dice", "ema_pseudo_dice", "pseudo_dice_VS", "pseudo_dice_cochlea", "final_val_dice"}
    assert expected <= metric_names[0]


def test_predict_volumes_writes_labels_on_the_input_grids(trained: Segmenter, cohort, tmp_path: Path) -> None:
    images = [(case, cohort.eval_dir / f"{case}_hrT2.nii.gz") for case in cohort.eval_case_ids]
    start = time.perf_counter()
    outputs = predict_volumes(trained, images, tmp_path / "pred", chunk_size=1, save_probabilities=True)
    print(f"predict_volumes, {len(images)} volumes in {len(images)} tasks: {time.perf_counter() - start:.1f} s")
    assert set(outputs) == set(cohort.eval_case_ids)
    postprocessing = json.loads((trained.postprocessing_file.with_suffix(".json")).read_text())
    for case, image_path in images:
        image, label = nib.load(str(image_path)), nib.load(str(outputs[case]))
        assert outputs[case] == tmp_path / "pred" / f"{case}.nii.gz"
        assert label.shape == image.shape
        np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
        values = np.asarray(label.dataobj)
        assert np.issubdtype(values.dtype, np.integer) and set(np.unique(values)) <= {0, 1, 2}
        probabilities = np.load(probabilities_path(outputs[case]))["probabilities"]
        assert probabilities.shape == (3, *image.shape)
        if not postprocessing["postprocessing_fns"]:  # float16 storage may break a near tie the other way
            assert np.mean(probabilities.argmax(axis=0) == values) > 0.999

    written = {case: path.stat().st_mtime_ns for case, path in outputs.items()}
    predict_volumes(trained, images, tmp_path / "pred", save_probabilities=True)  # nothing left to do
    assert {case: path.stat().st_mtime_ns for case, path in outputs.items()} == written

    refined = refine_pseudo_labels(outputs, tmp_path / "refined")
    for case in outputs:
        assert nib.load(str(refined[case])).shape == nib.load(str(outputs[case])).shape


def test_second_call_trains_nothing(trained: Segmenter, cohort) -> None:
    train = cohort.train_dir
    cases = [TrainingCase(c, train / f"{c}_ceT1.nii.gz", train / f"{c}_Label.nii.gz") for c in cohort.labelled_cases]
    def checkpoint_times() -> dict[int, int]:
        return {f: (trained.folders.fold_dir("2d", f) / "checkpoint_final.pth").stat().st_mtime_ns for f in trained.folds}

    checkpoints = checkpoint_times()
    start = time.perf_counter()
    again = train_segmenter(TINY, trained.work_dir, cases, use_gpu=False)
    seconds = time.perf_counter() - start
    print(f"second train_segmenter call: {seconds:.1f} s")
    assert not again.trained
    assert [r.trained for r in again.fold_results] == [False, False]
    assert again.configurations == trained.configurations
    assert again.postprocessing_file == trained.postprocessing_file
    assert checkpoint_times() == checkpoints


def network_weights(checkpoint: Path) -> dict:
    import torch

    return torch.load(str(checkpoint), map_location="cpu", weights_only=False)["network_weights"]


def test_a_warm_started_training_begins_from_the_given_model(trained: Segmenter, cohort, tmp_path: Path) -> None:
    """``warm_start``: each fold starts from the same fold of the given model, its segmentation heads included."""
    train = cohort.train_dir
    cases = [TrainingCase(c, train / f"{c}_ceT1.nii.gz", train / f"{c}_Label.nii.gz") for c in cohort.labelled_cases]
    barely = TINY.model_copy(update={"epochs": 1, "iterations_per_epoch": 1, "initial_lr": 1e-9})  # one step, too small to move
    warm = train_segmenter(barely, tmp_path / "warm", cases, use_gpu=False, warm_start=trained)
    for fold in trained.folds:
        before = network_weights(trained.folders.fold_dir("2d", fold) / "checkpoint_final.pth")
        after = network_weights(warm.folders.fold_dir("2d", fold) / "checkpoint_final.pth")
        assert before.keys() == after.keys() and any(".seg_layers." in key for key in after)
        largest = max(float((after[key].float() - before[key].float()).abs().max()) for key in before)
        assert largest < 1e-4, f"fold {fold}: a weight moved by {largest} in one step of lr 1e-9: not started from the model"


def _fold_worker_pid(results_dir: Path, task_name: str) -> int | None:
    """The Ray worker process running ``task_name`` on this work folder (its title and environment say so)."""
    wanted = f"nnUNet_results={results_dir}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "cmdline").read_bytes().startswith(f"ray::{task_name}".encode()):
                continue
            if wanted in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:  # the process ended, or is not ours to read
            continue
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds the Ray worker through /proc")
def test_a_fold_task_that_dies_is_retried_and_continues_from_its_checkpoint(
    trained: Segmenter, tracking: RunRef, tmp_path: Path
) -> None:
    # Same dataset, plans and complete fold 1 as the trained model: only fold 0 is left to train.
    folders = NnUNetFolders(tmp_path / "work", trained.dataset_name)
    shutil.copytree(trained.folders.raw, folders.raw)
    shutil.copytree(trained.folders.preprocessed, folders.preprocessed)
    shutil.copytree(trained.folders.fold_dir("2d", 1), folders.fold_dir("2d", 1))
    settings = SegmentConfig(configurations=["2d"], folds=2, epochs=6, iterations_per_epoch=2, batch_size=4, test_time_mirroring=False)
    client = MlflowClient(tracking.tracking_uri)
    parent = client.create_run(tracking.experiment_id, run_name="failure test").info.run_id
    logging = RunRef(tracking.tracking_uri, tracking.experiment_id, parent)

    results = []
    worker = threading.Thread(target=lambda: results.extend(run_folds(folders, settings, False, logging)))
    worker.start()
    latest = folders.fold_dir("2d", 0) / "checkpoint_latest.pth"
    deadline = time.monotonic() + 600
    while not latest.is_file():
        assert worker.is_alive() and time.monotonic() < deadline, "fold 0 never wrote checkpoint_latest.pth"
        time.sleep(0.1)
    pid = _fold_worker_pid(folders.results, "nnunet_fold_2d_0")
    assert pid is not None, "no Ray worker is running fold 0"
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=900)
    assert not worker.is_alive()

    fold0 = next(result for result in results if result.fold == 0)
    assert fold0.trained and 1 <= fold0.start_epoch < settings.epochs  # resumed, not restarted
    assert (folders.fold_dir("2d", 0) / "checkpoint_final.pth").is_file()
    assert not latest.exists()  # nnUNet removes it once the final checkpoint is written
    [run] = client.search_runs([tracking.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    starts = [m.value for m in client.get_metric_history(run.info.run_id, "start_epoch")]
    assert sorted(starts) == [0, fold0.start_epoch]  # both attempts logged to the same child run
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_two_configurations_are_selected_between_and_ensembled(ray_local, cohort, tmp_path: Path) -> None:
    train = cohort.train_dir
    cases = [TrainingCase(c, train / f"{c}_ceT1.nii.gz", train / f"{c}_Label.nii.gz") for c in cohort.labelled_cases]
    settings = SegmentConfig(configurations=["2d", "3d_fullres"], folds=2, epochs=1, iterations_per_epoch=2, batch_size=2, test_time_mirroring=False)
    segmenter = train_segmenter(settings, tmp_path / "work", cases, use_gpu=False)
    assert set(segmenter.cv_dice) == {
        "TanqTrainer__nnUNetPlans__2d",
        "TanqTrainer__nnUNetPlans__3d_fullres",
        "ensemble___TanqTrainer__nnUNetPlans__2d___TanqTrainer__nnUNetPlans__3d_fullres___0_1",
    }
    assert set(segmenter.configurations) <= {"2d", "3d_fullres"}
    ensemble = replace(segmenter, configurations=("2d", "3d_fullres"))  # whatever nnUNet chose, average both
    case = cohort.eval_case_ids[0]
    image_path = cohort.eval_dir / f"{case}_hrT2.nii.gz"
    [output] = predict_volumes(ensemble, [(case, image_path)], tmp_path / "pred", save_probabilities=True).values()
    assert nib.load(str(output)).shape == nib.load(str(image_path)).shape
    probabilities = np.load(probabilities_path(output))["probabilities"].astype(np.float32)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-2)


def test_fold_all_trains_one_model_on_every_case_and_predicts(ray_local, cohort, tmp_path: Path) -> None:
    train = cohort.train_dir
    cases = [TrainingCase(c, train / f"{c}_ceT1.nii.gz", train / f"{c}_Label.nii.gz") for c in cohort.labelled_cases]
    settings = TINY.model_copy(update={"folds": "all"})
    segmenter = train_segmenter(settings, tmp_path / "segment", cases, use_gpu=False)
    assert segmenter.folds == ("all",) and segmenter.configurations == ("2d",)
    assert [(r.fold, r.trained, r.validation_dice) for r in segmenter.fold_results] == [("all", True, {})]
    assert segmenter.postprocessing_file is None and segmenter.cv_dice == {} and segmenter.cv_dice_selected is None
    assert (segmenter.folders.fold_dir("2d", "all") / "checkpoint_final.pth").is_file()
    assert not (segmenter.folders.fold_dir("2d", "all") / "checkpoint_best.pth").exists()  # no validation, no "best"
    assert not (segmenter.folders.preprocessed_dataset / "splits_final.json").exists()
    assert load_segmenter(segmenter.work_dir) == segmenter

    case = cohort.eval_case_ids[0]
    image = cohort.eval_dir / f"{case}_hrT2.nii.gz"
    outputs = predict_volumes(segmenter, [(case, image)], tmp_path / "pred")
    assert nib.load(str(outputs[case])).shape == nib.load(str(image)).shape

    again = train_segmenter(settings, tmp_path / "segment", cases, use_gpu=False)
    assert not again.trained  # complete without a validation of its own


def test_progress_png_is_drawn_after_the_last_epoch_and_at_most_once_per_interval(monkeypatch, tmp_path: Path) -> None:
    from nnunetv2.training.logging.nnunet_logger import MetaLogger

    from tanq_ray.segment.trainer import SparseProgressLogger

    drawn: list[int] = []
    monkeypatch.setattr(MetaLogger, "plot_progress_png", lambda self, folder: drawn.append(len(self.get_value("epoch_end_timestamps", step=None))))

    def train(epochs: int, interval: float) -> list[int]:
        drawn.clear()
        logger = SparseProgressLogger(MetaLogger(str(tmp_path), resume=False), epochs, interval)
        for epoch in range(epochs):
            logger.log("epoch_end_timestamps", time.time(), epoch)
            logger.plot_progress_png(str(tmp_path))
        return list(drawn)

    assert train(5, interval=3600.0) == [5]  # short epochs: only the final picture
    assert train(5, interval=0.0) == [1, 2, 3, 4, 5]  # epochs longer than the interval: every epoch, as nnUNet


def test_refined_predictions_follow_the_rules_and_keep_the_raw_ones(trained: Segmenter, cohort, tmp_path: Path) -> None:
    """``segment.refine_predictions``: the scored labels are the raw predictions refined by the source scans' rules."""
    ingest = IngestConfig(image_size=48)
    sources = [VolumeToCut(c, cohort.train_dir / f"{c}_ceT1.nii.gz", cohort.train_dir / f"{c}_Label.nii.gz") for c in cohort.labelled_cases]
    source_label_paths = [roi.label for roi in cut_rois(sources, ingest, tmp_path / "roi" / "ceT1")]
    evaluation = [VolumeToCut(c, cohort.eval_dir / f"{c}_hrT2.nii.gz") for c in cohort.eval_case_ids]
    rois = cut_rois(evaluation, ingest, tmp_path / "roi" / "eval")
    settings = TINY.model_copy(update={
        "refine_min_confidence": 0.6, "refine_vs_location_mm": 5.0, "refine_one_cochlea_per_side": True,
        "refine_vs_max_fluid_share": 0.8,
    })  # fmt: skip
    folder = tmp_path / "eval_predictions"
    labels = segment_and_refine(trained, rois, folder, settings, source_label_paths, refine=True)

    vs_prior, cochlea_position = refinement_rules(settings, source_label_paths)
    removed = 0
    for roi in rois:
        raw = nib.load(str(folder / "raw" / ROI_FOLDER / f"{roi.case_id}.nii.gz"))
        probabilities = np.load(probabilities_path(folder / "raw" / ROI_FOLDER / f"{roi.case_id}.nii.gz"))["probabilities"]
        scan = np.asarray(nib.load(str(roi.image)).dataobj, dtype=np.float32)
        expected = refine_label(
            np.asarray(raw.dataobj), probabilities, 0.6, raw.header.get_zooms()[:3], vs_prior, cochlea_position, scan, 0.8
        )
        refined = np.asarray(nib.load(str(labels[roi.case_id])).dataobj)
        np.testing.assert_array_equal(refined, expected)
        removed += int(np.count_nonzero(np.asarray(raw.dataobj)) - np.count_nonzero(refined))
        pasted = np.asarray(nib.load(str(folder / f"{roi.case_id}.nii.gz")).dataobj)
        np.testing.assert_array_equal(pasted, np.asarray(paste_back(refined, read_geometry(roi.geometry)).dataobj))
    assert removed > 0, "the rules removed nothing: the test cannot tell refined predictions from raw ones"
