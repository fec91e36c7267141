"""Segment hrT2 volumes with a trained :class:`~tanq_ray.segment.segmenter.Segmenter`, in chunks of volumes as Ray tasks.

Per volume (paper section 3, steps 3 and 5), for each selected configuration:
nnUNet's preprocessing, sliding-window prediction averaged over all folds
(with test-time mirroring unless training turned it off), softmax resampled
back onto the input grid; the configurations' probabilities are averaged
(nnUNet's ensembling), the argmax is taken and the selected postprocessing
applied. The label volume is written, atomically, on the input's grid by
nnUNet's image writer.

Each chunk of volumes is one Ray task (1 CPU, or 1 GPU when asked) that
loads the networks once; volumes whose output exists are skipped, so an
interrupted call resumes. By default there are as many chunks as free CPUs
(GPUs), each of at least :data:`MIN_VOLUMES_PER_TASK` volumes: a task's worker
starts by importing torch and nnUNet, about 13 s of CPU on a small machine,
longer than predicting ten tiny-configuration volumes, so on a busy 2-core
machine one task does the whole call. With ``save_probabilities`` the averaged
softmax is written beside each label as ``<case_id>.npz`` (array
``probabilities``, float16, shape (3, X, Y, Z) in the voxel order nibabel
reads the label in), for :mod:`tanq_ray.segment.refine`.

The networks are rebuilt from the plans through our trainer class and loaded
with nnUNet's ``manual_initialization``: nnUNet's own loader only finds
trainers that live inside the nnunetv2 package.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np
import ray

from tanq_ray import progress_board
from tanq_ray.io_utils import atomic_path
from tanq_ray.progress_board import worker_output
from tanq_ray.segment.folders import NnUNetFolders, use_spawn
from tanq_ray.segment.segmenter import Segmenter

log = logging.getLogger(__name__)
T = TypeVar("T")

LABEL_SUFFIX = ".nii.gz"
MIN_VOLUMES_PER_TASK = 4
PROBABILITIES_SUFFIX = ".npz"


def probabilities_path(label_path: str | Path) -> Path:
    """Where :func:`predict_volumes` puts the softmax of a predicted label volume: ``<case_id>.npz`` beside it."""
    label_path = Path(label_path)
    return label_path.with_name(label_path.name.removesuffix(LABEL_SUFFIX) + PROBABILITIES_SUFFIX)


def _load_predictors(folders: NnUNetFolders, configurations: Sequence[str], folds: Sequence[int | str], device_type: str) -> list:
    """One nnUNetPredictor per configuration, holding the weights of every fold."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from tanq_ray.segment.trainer import TanqTrainer

    predictors = []
    for configuration in configurations:
        model_dir = folders.model_dir(configuration)
        plans_manager = PlansManager(load_json(str(model_dir / "plans.json")))
        dataset_json = load_json(str(model_dir / "dataset.json"))
        configuration_manager = plans_manager.get_configuration(configuration)
        checkpoints = [
            torch.load(folders.fold_dir(configuration, f) / "checkpoint_final.pth", map_location="cpu", weights_only=False)
            for f in folds
        ]
        network = TanqTrainer.build_network_architecture(
            plans_manager,
            configuration_manager,
            determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
            plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
            enable_deep_supervision=False,
        )
        predictor = nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=True,
            perform_everything_on_device=device_type == "cuda",
            device=torch.device(device_type),
            verbose=False,
            allow_tqdm=False,
        )
        predictor.manual_initialization(
            network.to(torch.device(device_type)),
            plans_manager,
            configuration_manager,
            [checkpoint["network_weights"] for checkpoint in checkpoints],
            dataset_json,
            TanqTrainer.__name__,
            checkpoints[0].get("inference_allowed_mirroring_axes"),
        )
        predictors.append(predictor)
    return predictors


def _ensemble_softmax(predictors: list, image: Path) -> tuple[np.ndarray, dict]:
    """Softmax (3, *reader-order grid) of one volume, averaged over folds and configurations, and its geometry."""
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    total, properties = None, None
    for predictor in predictors:
        preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
        data, _, case_properties = preprocessor.run_case(
            [str(image)], None, predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
        )
        logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()  # mean over folds
        _, softmax = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits,
            predictor.plans_manager,
            predictor.configuration_manager,
            predictor.label_manager,
            case_properties,
            return_probabilities=True,
        )
        if total is None:
            total, properties = softmax, case_properties
        else:
            total += softmax
    return total / len(predictors), properties


def _predict_chunk(
    segmenter: Segmenter, jobs: list[tuple[str, Path, Path]], device_type: str, save_probabilities: bool
) -> list[float]:
    """Task body: predict each (case_id, image, output) of ``jobs``; return seconds per volume."""
    use_spawn()
    with worker_output(f"nnunet-predict {segmenter.folders.work_dir.name}"):
        return _predict_logged(segmenter, jobs, device_type, save_probabilities)


def _predict_logged(
    segmenter: Segmenter, jobs: list[tuple[str, Path, Path]], device_type: str, save_probabilities: bool
) -> list[float]:
    """:func:`_predict_chunk` once its output goes to the log."""
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

    predictors = _load_predictors(segmenter.folders, segmenter.configurations, segmenter.folds, device_type)
    postprocessing = load_pickle(str(segmenter.postprocessing_file)) if segmenter.postprocessing_file else ([], [])
    postprocessing_functions, postprocessing_kwargs = postprocessing
    label_manager = predictors[0].label_manager
    writer = predictors[0].plans_manager.image_reader_writer_class()
    seconds = []
    for case_id, image, output in jobs:
        start = time.perf_counter()
        probabilities, properties = _ensemble_softmax(predictors, image)
        segmentation = np.asarray(label_manager.convert_probabilities_to_segmentation(probabilities))
        segmentation = apply_postprocessing(segmentation, postprocessing_functions, postprocessing_kwargs)
        if save_probabilities:  # reader order (z, y, x) -> nibabel order (x, y, z)
            spatial_reversed = (0, *range(probabilities.ndim - 1, 0, -1))
            with atomic_path(probabilities_path(output)) as tmp:
                np.savez_compressed(tmp, probabilities=probabilities.transpose(spatial_reversed).astype(np.float16))
        with atomic_path(output) as tmp:
            writer.write_seg(segmentation.astype(np.uint8), str(tmp), properties)
        seconds.append(time.perf_counter() - start)
        print(f"predicted {case_id} in {seconds[-1]:.1f} s", flush=True)
    return seconds


def task_chunks(jobs: Sequence[T], chunk_size: int | None, free_devices: int) -> list[list[T]]:
    """``jobs`` split into Ray tasks: ``chunk_size`` jobs each, or (None) one task per free device.

    Without a ``chunk_size`` every task gets at least :data:`MIN_VOLUMES_PER_TASK`
    jobs; ``free_devices`` is what the cluster has free now (a busy cluster: 0,
    so one task).
    """
    if chunk_size is None:
        tasks = max(1, min(len(jobs) // MIN_VOLUMES_PER_TASK, free_devices))
        return [[jobs[i] for i in indices] for indices in np.array_split(np.arange(len(jobs)), tasks)]
    return [list(jobs[i : i + chunk_size]) for i in range(0, len(jobs), chunk_size)]


def _is_done(output: Path, save_probabilities: bool) -> bool:
    return output.is_file() and (not save_probabilities or probabilities_path(output).is_file())


def predict_volumes(
    segmenter: Segmenter,
    images: Sequence[tuple[str, Path]],
    out_dir: str | Path,
    chunk_size: int | None = None,
    save_probabilities: bool = False,
    use_gpu: bool | None = None,
) -> dict[str, Path]:
    """Segment ``(case_id, hrT2 NIfTI)`` pairs into ``out_dir/<case_id>.nii.gz``; return case_id -> label path.

    One Ray task per ``chunk_size`` volumes (None: see :func:`task_chunks`);
    existing outputs are kept.
    ``use_gpu`` None = use GPUs when the Ray cluster has any. Ray must be initialised.
    """
    if not ray.is_initialized():
        raise RuntimeError("predict_volumes runs nnUNet in Ray tasks: call ray.init() first")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    out_dir = Path(out_dir).resolve()
    outputs: dict[str, Path] = {}
    jobs = []
    for case_id, image in images:
        if case_id in outputs:
            raise ValueError(f"case id '{case_id}' is given more than once")
        if not Path(image).is_file():
            raise FileNotFoundError(f"case '{case_id}': image '{image}' does not exist")
        outputs[case_id] = out_dir / f"{case_id}{LABEL_SUFFIX}"
        if not _is_done(outputs[case_id], save_probabilities):
            jobs.append((case_id, Path(image).resolve(), outputs[case_id]))
    if not jobs:
        return outputs
    use_gpu = ray.cluster_resources().get("GPU", 0) >= 1 if use_gpu is None else use_gpu
    task = ray.remote(_predict_chunk).options(
        num_cpus=1, num_gpus=1 if use_gpu else 0, runtime_env=segmenter.folders.runtime_env(use_gpu), name="nnunet_predict"
    )
    free = int(ray.available_resources().get("GPU" if use_gpu else "CPU", 0))
    chunks = task_chunks(jobs, chunk_size, free)
    row = segmenter.folders.work_dir.name
    log.info("%s: predicting %d volumes in %d Ray task(s) of up to %d", row, len(jobs), len(chunks), len(chunks[0]))
    start = time.perf_counter()
    pending = [task.remote(segmenter, chunk, "cuda" if use_gpu else "cpu", save_probabilities) for chunk in chunks]
    done = 0
    progress_key = f"predict {row}"
    progress_board.post(progress_key, f"0/{len(jobs)} volumes")
    try:
        while pending:
            [ref], pending = ray.wait(pending, num_returns=1)
            done += len(ray.get(ref))
            progress_board.post(progress_key, f"{done}/{len(jobs)} volumes")
            log.info("%s: %d/%d volumes predicted (%.1f s)", row, done, len(jobs), time.perf_counter() - start)
    finally:
        progress_board.clear(progress_key)
    return outputs
