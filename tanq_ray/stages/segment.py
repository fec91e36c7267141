"""Stages ``segment-round-<r>`` and ``segment-<reference row>``: one nnUNet per row, each scoring the evaluation hrT2.

Round 0 trains on the multi-view pseudo-hrT2; round r >= 1 adds the real
hrT2 with the previous round's predictions as labels (self-training). The
reference rows train on ceT1 (source-only) or labelled real hrT2
(target-supervised) with the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tanq_ray import stage_keys
from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config, SegmentConfig
from tanq_ray.run_ref import RunRef
from tanq_ray.runner import Inputs, Stage, StageContext
from tanq_ray.segment import Segmenter, TrainingCase, load_segmenter
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
    source_labels,
    source_rois,
    train_and_score,
    translated_training_cases,
)
from tanq_ray.setting_kinds import folder_fingerprint
from tanq_ray.stages.data import DataFolders
from tanq_ray.tracking import RunHandle, Tracker
from tanq_ray.translate import TranslatedCase

REFINEMENT_RULES = {
    "refine_min_confidence", "refine_vs_location_mm", "refine_vs_max_fluid_share", "refine_one_cochlea_per_side"
}
"""Segment settings of the refinement rules: read by every row with ``refine_predictions``, by rounds r >= 1 always."""
PSEUDO_LABEL_SETTINGS = {
    "refine_pseudo_labels", "pseudo_label_vs_margin_mm", "pseudo_label_vs_missing_unlabelled", "self_training_warm_start"
} | REFINEMENT_RULES
"""Segment settings that only self-training rounds (r >= 1) read (the rules also every row that refines its predictions)."""
ADAPTED_ROW_SETTINGS = {
    "views", "vs_patch_share", "structure_contrast", "structure_contrast_probability", "vs_texture",
    "translated_structure_min_contrast", "translated_erased_structures", "translated_smoothing",
}
"""Segment settings that only the adapted rows (round 0 and self-training) read: not in the reference rows' keys.

The reference rows are the bounds without adaptation and train with these
at their defaults (``vs_patch_share`` unset: nnUNet's patch sampling; ``structure_contrast`` and ``vs_texture``
unset: nnUNet's augmentation only;
``translated_structure_min_contrast`` unset and ``translated_erased_structures`` at its default, which only
pseudo-hrT2 volumes read).
"""


@dataclass(frozen=True)
class RowOutputs:
    """A segmentation row's outputs: its nnUNet folder, its predictions on the evaluation hrT2 and their scores."""

    work_dir: Path
    eval_predictions: Path | None
    per_case: list[dict[str, Any]] | None
    summary: dict[str, Any] | None

    @classmethod
    def of(cls, result: RowResult) -> "RowOutputs":
        evaluation = result.evaluation
        return cls(
            result.segmenter.work_dir,
            result.eval_predictions,
            evaluation.per_case if evaluation else None,
            evaluation.summary if evaluation else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "work_dir": str(self.work_dir),
            "eval_predictions": None if self.eval_predictions is None else str(self.eval_predictions),
            "per_case": self.per_case,
            "summary": self.summary,
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "RowOutputs":
        predictions = values.get("eval_predictions")
        return cls(Path(values["work_dir"]), None if predictions is None else Path(predictions), values.get("per_case"), values.get("summary"))


def train_and_log_row(
    config: Config,
    tracker: Tracker,
    run: RunHandle,
    folder: Path,
    cases: list[TrainingCase],
    folders: DataFolders,
    source_label_paths: Sequence[Path],
    warm_start: Segmenter | None = None,
) -> RowResult:
    """Train and score one row in ``folder``; log its counts, cross-validation Dice and scores to ``run``.

    ``source_label_paths``: the labelled source scans' ROI labels, which the
    refinement rules of ``segment.refine_predictions`` go by. ``warm_start``:
    the model the training starts from (None = random weights).
    """
    logging_to = RunRef.of(run, tracker.uri)
    eval_rois = hrT2_rois(config, "eval", folders.eval_dir)
    result = train_and_score(
        config.segment, folder, cases, eval_rois, folders.eval_labels_dir, logging_to, source_label_paths, warm_start
    )
    cv_dice = result.segmenter.cv_dice_selected
    run.log_metrics({"training_cases": len(cases)} | ({} if cv_dice is None else {"cv_dice": cv_dice}))
    run.set_tags({"configurations": "+".join(result.segmenter.configurations)})
    if result.evaluation is not None:
        run.log_metrics(_numbers(result.evaluation.summary))
        run.log_artifact(result.evaluation.per_case_path)
        run.log_artifact(result.evaluation.summary_path)
    if result.raw_evaluation is not None:  # what the refinement of the predictions changed, beside the scores
        run.log_metrics({f"raw_{key}": value for key, value in _numbers(result.raw_evaluation.summary).items()})
    return result


def _numbers(summary: Mapping[str, Any]) -> dict[str, float]:
    return {key: value for key, value in summary.items() if isinstance(value, (int, float))}


def segment_round(context: StageContext, index: int, translated: list[TranslatedCase], folders: DataFolders) -> RowOutputs:
    """Round ``index`` of nnUNet (0: multi-view pseudo-hrT2; >= 1: self-training), one nested run with a child per fold."""
    config, tracker = context.config, context.tracker
    tags = {"round": index, "row": round_name(index, config.segment.views)}
    with tracker.stage("segment", context.parent, tags=tags, name=f"segment-round-{index}", params=config.section_params("segment")) as run:
        ensure_ray(config)
        cases = translated_training_cases(translated, config.segment, round_dir(config, index))
        as_translated = multi_view_cases(translated, config.segment.views)
        run.log_metrics({"training_cases_with_erased_structures": sum(a != b for a, b in zip(cases, as_translated))})
        labels = source_labels(translated)
        previous = load_segmenter(round_dir(config, index - 1)) if index > 0 else None
        if previous is not None:
            unlabelled = hrT2_rois(config, "hrT2", folders.train_dir)
            cases += pseudo_labelled_cases(previous, config, index, unlabelled, labels)
        warm_start = previous if config.segment.self_training_warm_start else None
        result = train_and_log_row(config, tracker, run, round_dir(config, index), cases, folders, labels, warm_start)
    return RowOutputs.of(result)


def reference_row(context: StageContext, row: str, folders: DataFolders) -> RowOutputs:
    """A reference row (source-only or target-supervised): its own nnUNet with the same schedule, one nested run.

    The schedule has the adapted rows' settings at their defaults: a reference row is a bound without adaptation.
    """
    unadapted = {key: SegmentConfig.model_fields[key].default for key in ADAPTED_ROW_SETTINGS}
    config = context.config.model_copy(update={"segment": context.config.segment.model_copy(update=unadapted)})
    tracker = context.tracker
    with tracker.stage("segment", context.parent, tags={"row": row}, name=f"segment-{row}", params=config.section_params("segment")) as run:
        ensure_ray(config)
        cases = reference_cases(config, row, folders.train_dir, folders.train_hrT2_labels_dir)
        labels = [roi.label for roi in source_rois(config, folders.train_dir)] if config.segment.refine_predictions else []
        result = train_and_log_row(config, tracker, run, reference_dir(config, row), cases, folders, labels)
    return RowOutputs.of(result)


def row_share(config: Config, resources: Mapping[str, float]) -> float:
    """One row's nnUNet fold task holds 1 + ``segment.augmentation_processes`` CPUs: as many rows at once as the cluster holds."""
    cpus = resources.get("CPU", 1.0)
    return min(1.0, (1 + config.segment.augmentation_processes) / cpus) if cpus > 0 else 1.0


def segment_inputs(config: Config, folders: DataFolders) -> dict[str, Any]:
    """What every row reads: the segment settings no single kind of row owns, and the evaluation hrT2."""
    segment = stage_keys.section(config, "segment")
    not_shared = ADAPTED_ROW_SETTINGS | (PSEUDO_LABEL_SETTINGS - (REFINEMENT_RULES if config.segment.refine_predictions else set()))
    shared = {key: value for key, value in segment.items() if key not in not_shared}
    return {"segment": shared, "eval": folder_fingerprint(folders.eval_dir)}


def _round_reads(config: Config, inputs: Inputs, index: int) -> dict[str, Any]:
    segment = stage_keys.section(config, "segment")
    own = ADAPTED_ROW_SETTINGS | (PSEUDO_LABEL_SETTINGS if index else set())
    return segment_inputs(config, inputs["ingest"]) | {"round": index, "own": {key: segment[key] for key in sorted(own)}}


def round_stage(index: int) -> Stage:
    """Stage ``segment-round-<index>``: needs the translations, and from round 1 on the round before."""
    previous = (f"segment-round-{index - 1}",) if index else ()
    return Stage(
        name=f"segment-round-{index}",
        outputs=RowOutputs,
        run=lambda context, inputs: segment_round(context, index, inputs["translate"].cases, inputs["ingest"]),
        needs=("ingest", "translate", *previous),
        reads=lambda config, inputs: _round_reads(config, inputs, index),
        work_dirs=lambda config: [round_dir(config, index)],
        share=row_share,
    )


def reference_inputs(row: str, folders: DataFolders) -> dict[str, Any]:
    """What a reference row reads beyond the segment settings: the target-supervised row, the training hrT2's truth."""
    return {"truth": folder_fingerprint(folders.train_hrT2_labels_dir)} if row == TARGET_SUPERVISED else {}


def reference_stage(row: str) -> Stage:
    """Stage ``segment-<row>`` of a reference row: needs only the data (no translation)."""
    return Stage(
        name=f"segment-{row}",
        outputs=RowOutputs,
        run=lambda context, inputs: reference_row(context, row, inputs["ingest"]),
        needs=("ingest",),
        reads=lambda config, inputs: segment_inputs(config, inputs["ingest"]) | {"row": row} | reference_inputs(row, inputs["ingest"]),
        work_dirs=lambda config: [reference_dir(config, row)],
        share=row_share,
    )


def reference_row_names(config: Config) -> list[str]:
    """The reference rows the configured data can have: target-supervised only with truth for the training hrT2."""
    has_truth = config.data.train_dir is None or config.data.train_hrT2_labels_dir is not None
    return [SOURCE_ONLY] + ([TARGET_SUPERVISED] if has_truth else [])
