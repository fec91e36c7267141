"""The segmentation rounds of PAPER.md §3.3: nnUNet on multi-view pseudo-hrT2, then self-training.

Round 0 trains nnUNet on the pseudo-hrT2 volumes of both translators (true
ceT1 labels; the two views of a subject stay in one fold). Round ``r >= 1``
first pseudo-labels the unlabelled real hrT2 volumes with round ``r - 1``'s
model (optionally refined, ``segment.refine_pseudo_labels``), then trains a
new nnUNet on pseudo-hrT2 + real hrT2. Every round segments the evaluation
hrT2 volumes, and scores them when their labels exist. Each round lives in
``<output_dir>/segment/round_<r>/`` (nnUNet folders, ``pseudo_labels/``,
``eval_predictions/``), so a round can be resumed or re-run alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from tanq_ray.config import Config
from tanq_ray.data.layout import scan_folder
from tanq_ray.evaluate import Evaluation, evaluate_folder
from tanq_ray.segment import FoldLogging, Segmenter, TrainingCase, predict_volumes, refine_pseudo_labels, train_segmenter
from tanq_ray.translate import TranslatedCase

VIEW_SEPARATOR = "__"


@dataclass(frozen=True)
class RoundResult:
    """What one round produced."""

    index: int
    segmenter: Segmenter
    n_training_cases: int
    evaluation: Evaluation | None
    eval_predictions: Path | None


def round_dir(config: Config, index: int) -> Path:
    return config.stage_dir("segment") / f"round_{index}"


def hrT2_volumes(folder: Path | None) -> list[tuple[str, Path]]:
    """``(case_id, path)`` of every hrT2 volume in a CrossMoDA-layout folder (none when ``folder`` is None)."""
    if folder is None:
        return []
    return [(v.case_id, v.image) for v in scan_folder(folder) if v.domain == "hrT2"]


def multi_view_cases(translated: Sequence[TranslatedCase]) -> list[TrainingCase]:
    """Pseudo-hrT2 training cases ``<case>__<view>``, grouped by source case so views share a fold."""
    return [TrainingCase(f"{c.case_id}{VIEW_SEPARATOR}{c.view}", c.image, c.label, group=c.case_id) for c in translated]


def pseudo_labelled_cases(previous: Segmenter, config: Config, index: int, unlabelled: Sequence[tuple[str, Path]]) -> list[TrainingCase]:
    """Real hrT2 volumes with labels predicted by the previous round's model (refined when configured)."""
    folder = round_dir(config, index) / "pseudo_labels"
    refine = config.segment.refine_pseudo_labels
    labels = predict_volumes(previous, unlabelled, folder / ("raw" if refine else ""), save_probabilities=refine)
    if refine:
        labels = refine_pseudo_labels(labels, folder, config.segment.refine_min_confidence)
    images = dict(unlabelled)
    return [TrainingCase(case_id, images[case_id], label) for case_id, label in sorted(labels.items())]


def run_round(
    config: Config,
    index: int,
    cases: Sequence[TrainingCase],
    eval_images: Sequence[tuple[str, Path]],
    eval_labels_dir: Path | None,
    logging: FoldLogging | None,
) -> RoundResult:
    """Train round ``index``'s nnUNet on ``cases``, segment the evaluation volumes and score them if labelled."""
    folder = round_dir(config, index)
    segmenter = train_segmenter(config.segment, folder, cases, logging=logging)
    if not eval_images:
        return RoundResult(index, segmenter, len(cases), None, None)
    predictions = folder / "eval_predictions"
    predict_volumes(segmenter, eval_images, predictions)
    evaluation = evaluate_folder(predictions, eval_labels_dir) if eval_labels_dir is not None else None
    return RoundResult(index, segmenter, len(cases), evaluation, predictions)


def round_name(index: int) -> str:
    """How tables name a round: ``multi-view (no self-training)``, ``self-training round 1``, ..."""
    return "multi-view (no self-training)" if index == 0 else f"self-training round {index}"


def round_table_rows(evaluations: Mapping[int, Evaluation]) -> dict[str, list[dict]]:
    """Per-case rows of each scored round, keyed by :func:`round_name` (input of ``comparison_table``)."""
    return {round_name(index): evaluation.per_case for index, evaluation in sorted(evaluations.items())}
