"""Each stage of the recipe as a function of the config, recorded as a nested MLflow run.

The CLI runs one stage inside its own invocation run; the pipeline runs
several inside one. Stages talk to each other only through files under
``config.output_dir`` (see docs/usage.md, one section per command).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import ray

from tanq_ray import console, progress_board
from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config
from tanq_ray.data.ingest import IngestResult, run_ingest
from tanq_ray.data.phantom import Cohort, generate_cohort
from tanq_ray.data.preview import sample_grid
from tanq_ray.evaluate import comparison_table, evaluate_folder, readable_view
from tanq_ray.data.shards import Manifest
from tanq_ray.models.config import TRANSLATOR_NAMES
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.overlays import prediction_figure, translation_figure
from tanq_ray.run_ref import RunRef
from tanq_ray.segment import TrainingCase, load_segmenter
from tanq_ray.segment.roi_volumes import ROI_FOLDER, VolumeToCut, cut_rois
from tanq_ray.self_training import (
    SOURCE_ONLY,
    TARGET_SUPERVISED,
    RowResult,
    hrT2_rois,
    multi_view_cases,
    pseudo_labelled_cases,
    reference_cases,
    reference_dir,
    round_dir,
    round_name,
    train_and_score,
)
from tanq_ray.tracking import RunHandle, Tracker
from tanq_ray.train.export import GENERATOR_FILE
from tanq_ray.train.launcher import TrainResult, launch_training, model_tags, translator_params
from tanq_ray.translate import TranslatedCase, TranslateResult, translate_cohort
from tanq_ray.tune.scoring import score_translator
from tanq_ray.visuals import save_png

TRANSLATORS = TRANSLATOR_NAMES

if TYPE_CHECKING:
    from tanq_ray.pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataFolders:
    """Where the training and evaluation volumes are, after the phantom fallback."""

    train_dir: Path
    eval_dir: Path | None
    eval_labels_dir: Path | None
    train_hrT2_labels_dir: Path | None = None

    @classmethod
    def from_outputs(cls, outputs: dict[str, str | None]) -> "DataFolders":
        """Back from :func:`data_folder_outputs`."""
        return cls(**{name: None if outputs.get(name) is None else Path(outputs[name]) for name in cls.__dataclass_fields__})


def phantom_stage(config: Config, tracker: Tracker, parent: RunHandle) -> Cohort:
    """Generate the phantom cohort (``phantom.*`` settings) under ``<output_dir>/phantom``."""
    settings = config.phantom
    with tracker.stage("phantom", parent, params=config.section_params("phantom")) as run:
        cohort = generate_cohort(
            config.stage_dir("phantom"),
            cases=settings.cases,
            eval_cases=settings.eval_cases,
            size=settings.size,
            seed=settings.seed,
            progress=lambda done, total, _: progress_board.post("phantom", f"{done}/{total} volumes"),
        )
        progress_board.clear("phantom")
        run.log_metrics(
            {
                "cases_labelled": len(cohort.labelled_cases),
                "cases_unlabelled": len(cohort.unlabelled_cases),
                "cases_eval": len(cohort.eval_case_ids),
            }
        )
    return cohort


def data_folders(config: Config, tracker: Tracker, parent: RunHandle) -> DataFolders:
    """The configured data folders; with ``data.train_dir`` unset, a phantom cohort generated first."""
    data = config.data
    if data.train_dir is not None:
        return DataFolders(data.train_dir, data.eval_dir, data.eval_labels_dir, data.train_hrT2_labels_dir)
    log.info("data.train_dir is unset: generating the phantom cohort under %s", config.stage_dir("phantom"))
    cohort = phantom_stage(config, tracker, parent)
    return DataFolders(cohort.train_dir, cohort.eval_dir, cohort.eval_labels_dir, cohort.train_labels_dir)


def ingest_stage(config: Config, tracker: Tracker, parent: RunHandle, folders: DataFolders | None = None) -> IngestResult:
    """NIfTI -> Parquet shards under ``<output_dir>/ingest``; logs counts, timings and a sample grid."""
    ensure_ray(config)
    folders = folders or data_folders(config, tracker, parent)
    out_dir = config.stage_dir("ingest")
    with tracker.stage("ingest", parent, params=config.section_params("data", "ingest")) as run:
        result = run_ingest(folders.train_dir, out_dir, config.ingest, progress=console.active() is None)
        counts = result.manifest.counts()
        run.log_metrics(
            counts
            | {
                "volumes_processed": result.processed,
                "volumes_reused": result.reused,
                "seconds": result.seconds,
                "volumes_per_second": result.processed / result.seconds,
                "slices_per_second": result.processed_slices / result.seconds,
            }
        )
        preview = save_png(sample_grid(result.manifest), out_dir / "sample_slices.png")
        run.log_artifact(preview)
        run.log_artifact(out_dir / "manifest.json")
    return result


def train_stage(config: Config, tracker: Tracker, parent: RunHandle) -> TrainResult:
    """Train ``train.model`` on the ingest shards with Ray Train; its MLflow run gets per-epoch metrics."""
    name = config.train.model
    with tracker.stage("train", parent, tags=model_tags(config), name=f"train-{name}", params=translator_params(config)) as run:
        ensure_ray(config)
        result = launch_training(config, RunRef.of(run, tracker.uri))
        run.log_artifact(result.generator, "model")
        run.log_metrics(translation_scores(config, result.generator))
    return result


def translation_scores(config: Config, generator: Path) -> dict[str, float]:
    """The quality metrics every translator run logs, as sweep trials do (structure score; see tanq_ray.tune.scoring)."""
    return score_translator(Path(generator), config.stage_dir("ingest"), config.sweep.score_slices)


def ingest_outputs(config: Config, tracker: Tracker, parent: RunHandle) -> dict[str, str | None]:
    """The ingest stage for the pipeline: its data folders as JSON-ready outputs."""
    folders = data_folders(config, tracker, parent)
    ingest_stage(config, tracker, parent, folders)
    return data_folder_outputs(folders)


def data_folder_outputs(folders: DataFolders) -> dict[str, str | None]:
    return {name: None if path is None else str(path) for name, path in vars(folders).items()}


def existing_generators(config: Config) -> dict[str, str]:
    """The generators ``tanq train`` exported; a clear error naming what to run when one is missing."""
    generators = translator_paths(config)
    missing = [f"{model} ({path})" for model, path in generators.items() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"no trained generator for {', '.join(missing)}: run `tanq train model=<name>` first")
    return {model: str(path) for model, path in generators.items()}


@ray.remote(num_cpus=0)
def _train_remote(config_tree: dict[str, Any], run: RunRef) -> str:
    """Drive one ``TorchTrainer`` from a task, so two translators train at once (its workers hold the resources)."""
    return str(launch_training(Config.model_validate(config_tree), run).generator)


def train_translators(config: Config, tracker: Tracker, parent: RunHandle, pipeline: Pipeline, keys: dict[str, str]) -> dict[str, str]:
    """Pipeline stages ``train-<model>``: TANQ and CycleGAN, at once when the cluster holds both worker groups."""
    from tanq_ray.tune.sweep import concurrent_trials

    configs = {m: config.model_copy(update={"train": config.train.model_copy(update={"model": m})}) for m in keys}
    todo = [m for m in keys if pipeline.cached(f"train-{m}", keys[m]) is None]
    together = len(todo) > 1 and concurrent_trials(config, ray.cluster_resources(), len(todo)) >= len(todo)
    work_dirs = {m: translator_work_dirs(config, m) for m in keys}
    with ExitStack() as stack:
        running: dict[str, tuple[RunHandle, Any]] = {}
        for model in todo if together else []:
            pipeline.prepare(f"train-{model}", keys[model], work_dirs[model])
            stage = tracker.stage("train", parent, tags=model_tags(configs[model]), name=f"train-{model}", params=translator_params(configs[model]))
            run = stack.enter_context(stage)
            running[model] = (run, _train_remote.remote(configs[model].model_dump(mode="json"), RunRef.of(run, tracker.uri)))

        def body(model: str) -> Callable[[], dict[str, str]]:
            def train() -> dict[str, str]:
                if model not in running:
                    return {"generator": str(train_stage(configs[model], tracker, parent).generator)}
                run, pending = running[model]
                generator = ray.get(pending)
                run.log_artifact(generator, "model")
                run.log_metrics(translation_scores(configs[model], generator))
                return {"generator": generator}

            return train

        return {model: pipeline.run(f"train-{model}", keys[model], body(model), work_dirs[model])["generator"] for model in keys}


def translator_work_dirs(config: Config, model: str) -> list[Path]:
    """Where a translator's training writes: Ray Train's storage (checkpoints) and the exported generator."""
    return [config.stage_dir("train") / "ray" / model, config.stage_dir("train") / model]


def translator_paths(config: Config) -> dict[str, Path]:
    """Where ``tanq train`` exports each translator's generator."""
    return {model: config.stage_dir("train") / model / GENERATOR_FILE for model in TRANSLATORS}


def translate_stage(
    config: Config, tracker: Tracker, parent: RunHandle, generators: dict[str, Path], hrT2_truth: Path | None = None
) -> TranslateResult:
    """ceT1 volumes -> one pseudo-hrT2 ROI volume per translator under ``<output_dir>/translate/<view>/``.

    Logs throughput and ``translation.png`` (:func:`translation_picture`).
    """
    with tracker.stage("translate", parent, params=config.section_params("ingest")) as run:
        ensure_ray(config)
        result = translate_cohort(config.stage_dir("ingest"), generators, config.stage_dir("translate"), use_gpu=config.train.use_gpu or None)
        run.log_metrics(
            {
                "volumes": result.volumes,
                "volumes_reused": result.reused,
                "slices": result.slices,
                "seconds": result.seconds,
                "seconds_per_slice": result.seconds / max(result.slices, 1),
                "seconds_per_volume": result.seconds / max(result.volumes, 1),
            }
        )
        run.log_artifact(translation_picture(config, result, hrT2_truth))
    return result


def translation_picture(config: Config, result: TranslateResult, hrT2_truth: Path | None) -> Path:
    """``translate/translation.png``: the first ceT1 case | its pseudo-hrT2 per view | a real hrT2 of the same site."""
    manifest = Manifest.read(config.stage_dir("ingest"))
    source = next(v for v in manifest.volumes if v.domain == "ceT1")
    same_site = [v for v in manifest.volumes if v.domain == "hrT2" and v.site == source.site]
    real = (same_site or [v for v in manifest.volumes if v.domain == "hrT2"])[0]
    truth = Path(hrT2_truth) / f"{real.case_id}_Label.nii.gz" if hrT2_truth is not None else None
    truth = truth if truth is not None and truth.is_file() else None
    roi = config.stage_dir("roi")
    [source_roi] = cut_rois([VolumeToCut(source.case_id, Path(source.image_file), Path(source.label_file))], config.ingest, roi / "ceT1")
    [real_roi] = cut_rois([VolumeToCut(real.case_id, Path(real.image_file), truth)], config.ingest, roi / "picture")
    views = {c.view: c.image for c in result.cases if c.case_id == source.case_id}
    out = config.stage_dir("translate") / "translation.png"
    return translation_figure(source_roi.image, source_roi.label, views, real_roi.image, real_roi.label, source.case_id, out)


def translate_outputs(
    config: Config, tracker: Tracker, parent: RunHandle, generators: dict[str, str], folders: dict[str, str | None]
) -> dict[str, Any]:
    truth = folders.get("train_hrT2_labels_dir")
    result = translate_stage(config, tracker, parent, {view: Path(path) for view, path in generators.items()}, None if truth is None else Path(truth))
    return {"cases": [case.to_json() for case in result.cases]}


def segment_round_stage(
    config: Config, tracker: Tracker, parent: RunHandle, index: int, translated: list[TranslatedCase], folders: DataFolders
) -> RowResult:
    """Round ``index`` of nnUNet (0: multi-view pseudo-hrT2; >= 1: self-training), one nested run with a child per fold."""
    tags = {"round": index, "row": round_name(index, config.segment.views)}
    with tracker.stage("segment", parent, tags=tags, name=f"segment-round-{index}", params=config.section_params("segment")) as run:
        ensure_ray(config)
        cases = multi_view_cases(translated, config.segment.views)
        if index > 0:
            previous = load_segmenter(round_dir(config, index - 1))
            cases += pseudo_labelled_cases(previous, config, index, hrT2_rois(config, "hrT2", folders.train_dir))
        result = train_and_log_row(config, tracker, run, round_dir(config, index), cases, folders)
    return result


def reference_row_stage(config: Config, tracker: Tracker, parent: RunHandle, row: str, folders: DataFolders) -> RowResult:
    """A reference row (source-only or target-supervised): its own nnUNet with the same schedule, one nested run."""
    with tracker.stage("segment", parent, tags={"row": row}, name=f"segment-{row}", params=config.section_params("segment")) as run:
        ensure_ray(config)
        cases = reference_cases(config, row, folders.train_dir, folders.train_hrT2_labels_dir)
        result = train_and_log_row(config, tracker, run, reference_dir(config, row), cases, folders)
    return result


def train_and_log_row(
    config: Config, tracker: Tracker, run: RunHandle, folder: Path, cases: list[TrainingCase], folders: DataFolders
) -> RowResult:
    """Train and score one row in ``folder``; log its counts, cross-validation Dice and scores to ``run``."""
    logging_to = RunRef.of(run, tracker.uri)
    eval_rois = hrT2_rois(config, "eval", folders.eval_dir)
    result = train_and_score(config.segment, folder, cases, eval_rois, folders.eval_labels_dir, logging_to)
    cv_dice = result.segmenter.cv_dice_selected
    run.log_metrics({"training_cases": len(cases)} | ({} if cv_dice is None else {"cv_dice": cv_dice}))
    run.set_tags({"configurations": "+".join(result.segmenter.configurations)})
    if result.evaluation is not None:
        run.log_metrics({k: v for k, v in result.evaluation.summary.items() if isinstance(v, (int, float))})
        run.log_artifact(result.evaluation.per_case_path)
        run.log_artifact(result.evaluation.summary_path)
    return result


def row_outputs(result: RowResult) -> dict[str, Any]:
    """A trained row as JSON-ready stage outputs."""
    evaluation = result.evaluation
    return {
        "work_dir": str(result.segmenter.work_dir),
        "eval_predictions": None if result.eval_predictions is None else str(result.eval_predictions),
        "per_case": evaluation.per_case if evaluation else None,
        "summary": evaluation.summary if evaluation else None,
    }


def segment_round_outputs(
    config: Config, tracker: Tracker, parent: RunHandle, index: int, translated: dict[str, Any], folders: dict[str, str | None]
) -> dict[str, Any]:
    cases = [TranslatedCase.from_json(case) for case in translated["cases"]]
    return row_outputs(segment_round_stage(config, tracker, parent, index, cases, DataFolders.from_outputs(folders)))


def reference_row_outputs(config: Config, tracker: Tracker, parent: RunHandle, row: str, folders: dict[str, str | None]) -> dict[str, Any]:
    return row_outputs(reference_row_stage(config, tracker, parent, row, DataFolders.from_outputs(folders)))


def evaluate_stage(
    config: Config, tracker: Tracker, parent: RunHandle, rows: dict[str, dict[str, Any]], folders: DataFolders
) -> Path | None:
    """The final table in ``<output_dir>/evaluation/``: every scored row, with the gap closed between the reference rows.

    ``rows`` maps row name -> :func:`row_outputs`, in table order (source-only,
    the rounds, target-supervised); the last round's predictions are the
    recipe's result (``per_case.csv``, ``summary.json``). p-values are paired
    t-tests of per-case mean Dice against source-only. ``predictions_<case>.png``
    shows every row's prediction on the first evaluation cases.
    """
    out = config.stage_dir("evaluation")
    labels_dir = folders.eval_labels_dir
    with tracker.stage("evaluate", parent, params=config.section_params("data")) as run:
        predicted = {name: Path(row["eval_predictions"]) for name, row in rows.items() if row.get("eval_predictions")}
        # scored here, with the labels as they are now: a row trained before labels were added (or fixed) is not retrained
        scored = {name: evaluate_folder(folder, labels_dir).per_case for name, folder in predicted.items()} if labels_dir else {}
        if not scored:
            log.warning("no row was scored (no data.eval_labels_dir): the evaluation table is empty")
            return None
        final_row = [name for name in rows if name not in (SOURCE_ONLY, TARGET_SUPERVISED)][-1]
        final = evaluate_folder(Path(rows[final_row]["eval_predictions"]), labels_dir, out)
        bounds = (SOURCE_ONLY, TARGET_SUPERVISED) if {SOURCE_ONLY, TARGET_SUPERVISED} <= set(scored) else None
        table = comparison_table(scored, reference=SOURCE_ONLY if SOURCE_ONLY in scored else None, bounds=bounds)
        _, comma_separated = table.write(out / "results")
        markdown = write_text_atomic(out / "results.md", readable_view(table).markdown())
        run.log_metrics({k: v for k, v in final.summary.items() if isinstance(v, (int, float))})
        for path in (markdown, comma_separated, final.per_case_path, final.summary_path):
            run.log_artifact(path)
        parent.log_artifact(markdown)  # the table where the pipeline's run is opened
        predictions = {name: Path(rows[name]["eval_predictions"]) / ROI_FOLDER for name in scored}
        for picture in prediction_pictures(config, folders, predictions, out):
            run.log_artifact(picture)
            parent.log_artifact(picture)
    return markdown


def prediction_pictures(config: Config, folders: DataFolders, predictions: dict[str, Path], out: Path, cases: int = 2) -> list[Path]:
    """``predictions_<case>.png`` for the first ``cases`` evaluation cases: a row per table row (see :mod:`tanq_ray.overlays`)."""
    truths = hrT2_rois(config, "eval_truth", folders.eval_dir, folders.eval_labels_dir)[:cases]
    return [
        prediction_figure(
            truth.image, truth.label, {row: folder / f"{truth.case_id}.nii.gz" for row, folder in predictions.items()},
            truth.case_id, out / f"predictions_{truth.case_id}.png",
        )  # fmt: skip
        for truth in truths
    ]


def evaluate_outputs(
    config: Config, tracker: Tracker, parent: RunHandle, rows: dict[str, dict[str, Any]], folders: dict[str, str | None]
) -> dict[str, Any]:
    markdown = evaluate_stage(config, tracker, parent, rows, DataFolders.from_outputs(folders))
    return {"table": None if markdown is None else str(markdown)}
