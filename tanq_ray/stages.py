"""Each stage of the recipe as a function of the config, recorded as a nested MLflow run.

The CLI runs one stage inside its own invocation run; the pipeline runs
several inside one. Stages talk to each other only through files under
``config.output_dir`` (see README, "Outputs").
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import ray

from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config
from tanq_ray.data.ingest import IngestResult, run_ingest
from tanq_ray.data.phantom import Cohort, generate_cohort
from tanq_ray.data.preview import sample_grid
from tanq_ray.evaluate import comparison_table, evaluate_folder, readable_view
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.segment import FoldLogging, load_segmenter
from tanq_ray.self_training import RoundResult, hrT2_volumes, multi_view_cases, pseudo_labelled_cases, round_dir, round_name, run_round
from tanq_ray.tracking import RunHandle, Tracker
from tanq_ray.train.export import GENERATOR_FILE
from tanq_ray.train.launcher import TrainResult, launch_training, model_tags
from tanq_ray.translate import TranslatedCase, TranslateResult, translate_cohort
from tanq_ray.visuals import save_png

TRANSLATORS = ("tanq", "cyclegan")

if TYPE_CHECKING:
    from tanq_ray.pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataFolders:
    """Where the training and evaluation volumes are, after the phantom fallback."""

    train_dir: Path
    eval_dir: Path | None
    eval_labels_dir: Path | None


def phantom_stage(config: Config, tracker: Tracker, parent: RunHandle) -> Cohort:
    """Generate the phantom cohort (``phantom.*`` settings) under ``<output_dir>/phantom``."""
    settings = config.phantom
    with tracker.stage("phantom", parent) as run:
        cohort = generate_cohort(
            config.stage_dir("phantom"), cases=settings.cases, eval_cases=settings.eval_cases, size=settings.size, seed=settings.seed, progress=True
        )
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
        return DataFolders(data.train_dir, data.eval_dir, data.eval_labels_dir)
    log.info("data.train_dir is unset: generating the phantom cohort under %s", config.stage_dir("phantom"))
    cohort = phantom_stage(config, tracker, parent)
    return DataFolders(cohort.train_dir, cohort.eval_dir, cohort.eval_labels_dir)


def ingest_stage(config: Config, tracker: Tracker, parent: RunHandle, folders: DataFolders | None = None) -> IngestResult:
    """NIfTI -> Parquet shards under ``<output_dir>/ingest``; logs counts, timings and a sample grid."""
    folders = folders or data_folders(config, tracker, parent)
    out_dir = config.stage_dir("ingest")
    with tracker.stage("ingest", parent) as run:
        ensure_ray(config)
        result = run_ingest(folders.train_dir, out_dir, config.ingest)
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
    with tracker.stage("train", parent, tags=model_tags(config), name=f"train-{name}") as run:
        ensure_ray(config)
        result = launch_training(config, run.run_id, tracker.uri)
        run.log_artifact(result.generator, "model")
    return result


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
def _train_remote(config_tree: dict[str, Any], run_id: str, uri: str) -> str:
    """Drive one ``TorchTrainer`` from a task, so two translators train at once (its workers hold the resources)."""
    return str(launch_training(Config.model_validate(config_tree), run_id, uri).generator)


def train_translators(config: Config, tracker: Tracker, parent: RunHandle, pipeline: Pipeline, keys: dict[str, str]) -> dict[str, str]:
    """Pipeline stages ``train-<model>``: TANQ and CycleGAN, at once when the cluster holds both worker groups."""
    from tanq_ray.tune.sweep import concurrent_trials

    configs = {m: config.model_copy(update={"train": config.train.model_copy(update={"model": m})}) for m in keys}
    todo = [m for m in keys if pipeline.cached(f"train-{m}", keys[m]) is None]
    together = len(todo) > 1 and concurrent_trials(config, ray.cluster_resources(), len(todo)) >= len(todo)
    work_dirs = {m: [config.stage_dir("train") / "ray" / m, config.stage_dir("train") / m] for m in keys}
    with ExitStack() as stack:
        running: dict[str, tuple[RunHandle, Any]] = {}
        for model in todo if together else []:
            pipeline.prepare(f"train-{model}", keys[model], work_dirs[model])
            run = stack.enter_context(tracker.stage("train", parent, tags=model_tags(configs[model]), name=f"train-{model}"))
            running[model] = (run, _train_remote.remote(configs[model].model_dump(mode="json"), run.run_id, tracker.uri))

        def body(model: str) -> Callable[[], dict[str, str]]:
            def train() -> dict[str, str]:
                if model not in running:
                    return {"generator": str(train_stage(configs[model], tracker, parent).generator)}
                run, pending = running[model]
                generator = ray.get(pending)
                run.log_artifact(generator, "model")
                return {"generator": generator}

            return train

        return {model: pipeline.run(f"train-{model}", keys[model], body(model), work_dirs[model])["generator"] for model in keys}


def translator_paths(config: Config) -> dict[str, Path]:
    """Where ``tanq train`` exports each translator's generator."""
    return {model: config.stage_dir("train") / model / GENERATOR_FILE for model in TRANSLATORS}


def translate_stage(config: Config, tracker: Tracker, parent: RunHandle, generators: dict[str, Path]) -> TranslateResult:
    """ceT1 volumes -> one pseudo-hrT2 volume per translator under ``<output_dir>/translate/<view>/``."""
    with tracker.stage("translate", parent) as run:
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
    return result


def translate_outputs(config: Config, tracker: Tracker, parent: RunHandle, generators: dict[str, str]) -> dict[str, Any]:
    result = translate_stage(config, tracker, parent, {view: Path(path) for view, path in generators.items()})
    return {"cases": [{"case_id": c.case_id, "view": c.view, "image": str(c.image), "label": str(c.label)} for c in result.cases]}


def segment_round_stage(
    config: Config, tracker: Tracker, parent: RunHandle, index: int, translated: list[TranslatedCase], folders: DataFolders
) -> RoundResult:
    """Round ``index`` of nnUNet (0: multi-view pseudo-hrT2; >= 1: self-training), one nested run with a child per fold."""
    with tracker.stage("segment", parent, tags={"round": index}, name=f"segment-round-{index}") as run:
        ensure_ray(config)
        cases = multi_view_cases(translated)
        if index > 0:
            previous = load_segmenter(round_dir(config, index - 1))
            cases += pseudo_labelled_cases(previous, config, index, hrT2_volumes(folders.train_dir))
        logging_to = FoldLogging(tracker.uri, tracker.experiment_id, run.run_id)
        result = run_round(config, index, cases, hrT2_volumes(folders.eval_dir), folders.eval_labels_dir, logging_to)
        run.log_metrics({"training_cases": len(cases), "cv_dice": result.segmenter.cv_dice_selected})
        run.set_tags({"configurations": "+".join(result.segmenter.configurations)})
        if result.evaluation is not None:
            run.log_metrics({k: v for k, v in result.evaluation.summary.items() if isinstance(v, (int, float))})
            run.log_artifact(result.evaluation.per_case_path)
            run.log_artifact(result.evaluation.summary_path)
    return result


def segment_round_outputs(
    config: Config, tracker: Tracker, parent: RunHandle, index: int, translated: dict[str, Any], folders: dict[str, str | None]
) -> dict[str, Any]:
    cases = [TranslatedCase(c["case_id"], c["view"], Path(c["image"]), Path(c["label"])) for c in translated["cases"]]
    paths = DataFolders(*(None if folders[k] is None else Path(folders[k]) for k in ("train_dir", "eval_dir", "eval_labels_dir")))
    result = segment_round_stage(config, tracker, parent, index, cases, paths)
    evaluation = result.evaluation
    return {
        "work_dir": str(result.segmenter.work_dir),
        "per_case": evaluation.per_case if evaluation else None,
        "summary": evaluation.summary if evaluation else None,
    }


def evaluate_stage(
    config: Config, tracker: Tracker, parent: RunHandle, per_case: dict[int, list[dict[str, Any]]], labels_dir: Path | None
) -> Path | None:
    """The final table: every scored round (Dice, ASSD, mean +- std, paired t-test against round 0) in ``<output_dir>/evaluation/``."""
    out = config.stage_dir("evaluation")
    with tracker.stage("evaluate", parent) as run:
        if not per_case or labels_dir is None:
            log.warning("no round was scored (no data.eval_labels_dir): the evaluation table is empty")
            return None
        final = evaluate_folder(round_dir(config, max(per_case)) / "eval_predictions", labels_dir, out)
        runs = {round_name(index): rows for index, rows in sorted(per_case.items())}
        table = comparison_table(runs, reference=round_name(0) if len(runs) > 1 else None)
        _, comma_separated = table.write(out / "results")
        markdown = write_text_atomic(out / "results.md", readable_view(table).markdown())
        run.log_metrics({k: v for k, v in final.summary.items() if isinstance(v, (int, float))})
        for path in (markdown, comma_separated, final.per_case_path, final.summary_path):
            run.log_artifact(path)
    return markdown


def evaluate_outputs(
    config: Config, tracker: Tracker, parent: RunHandle, per_case: dict[int, list[dict[str, Any]]], folders: dict[str, str | None]
) -> dict[str, Any]:
    labels = folders["eval_labels_dir"]
    markdown = evaluate_stage(config, tracker, parent, per_case, None if labels is None else Path(labels))
    return {"table": None if markdown is None else str(markdown)}
