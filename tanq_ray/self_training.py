"""The segmentation rows: nnUNet on multi-view pseudo-hrT2, self-training (PAPER.md §3.3), and the reference rows.

Round 0 trains nnUNet on the pseudo-hrT2 volumes of both translators (true
ceT1 labels; the two views of a subject stay in one fold). Round ``r >= 1``
first pseudo-labels the unlabelled real hrT2 volumes with round ``r - 1``'s
model (optionally refined, ``segment.refine_pseudo_labels``), then trains a
new nnUNet on pseudo-hrT2 + real hrT2. Every round segments the evaluation
hrT2 volumes, and scores them when their labels exist. Each round lives in
``<output_dir>/segment/round_<r>/`` (nnUNet folders, ``pseudo_labels/``,
``eval_predictions/``), so a round can be resumed or re-run alone.

Everything nnUNet sees is an ROI volume (:mod:`tanq_ray.data.roi`): the
pseudo-hrT2 as translate wrote them, and real volumes cut once under
``<output_dir>/roi/<group>/``. Pseudo-labels and evaluation predictions are
written on the ROI grid (``roi/``, what the next round trains on) and pasted
back onto each scan's full grid (what the user opens, and what is scored).
With ``segment.refine_pseudo_labels`` / ``segment.refine_predictions`` the
rules of :mod:`tanq_ray.segment.refine` clean them first, the raw predictions
kept under ``raw/``.

The reference rows of the evaluation table are trained by the same
:func:`train_and_score`, each in ``<output_dir>/segment/<row>/``:
*source-only* on the ceT1 ROI volumes with their labels (no adaptation, the
lower bound) and *target-supervised* on real hrT2 with true labels (the
upper bound; only when such labels exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tanq_ray.config import Config, SegmentConfig
from tanq_ray.data.layout import scan_folder
from tanq_ray.data.roi import RoiCase
from tanq_ray.evaluate import Evaluation, evaluate_folder
from tanq_ray.models.config import TRANSLATOR_NAMES
from tanq_ray.run_ref import RunRef
from tanq_ray.segment import Segmenter, TrainingCase, refine_pseudo_labels, train_segmenter
from tanq_ray.segment.erased_structures import treat_erased_structures
from tanq_ray.segment.margin import write_with_unlabelled_margin
from tanq_ray.segment.refine import CochleaPosition, VsLocationPrior
from tanq_ray.segment.roi_volumes import ROI_FOLDER, VolumeToCut, cut_rois, paste_back_file, segment_rois
from tanq_ray.segment.smoothing import smoothed_cases
from tanq_ray.translate import TranslatedCase

VIEW_SEPARATOR = "__"
SOURCE_ONLY = "source-only"
TARGET_SUPERVISED = "target-supervised"
REFERENCE_ROWS = (SOURCE_ONLY, TARGET_SUPERVISED)


@dataclass(frozen=True)
class RowResult:
    """What one trained row (a self-training round or a reference row) produced."""

    segmenter: Segmenter
    n_training_cases: int
    evaluation: Evaluation | None
    eval_predictions: Path | None
    """Full-grid label maps of the evaluation hrT2 (None without evaluation volumes)."""
    raw_evaluation: Evaluation | None = None
    """The scores of the predictions before refinement (``segment.refine_predictions``), when they were scored."""


def round_dir(config: Config, index: int) -> Path:
    return config.stage_dir("segment") / f"round_{index}"


def reference_dir(config: Config, row: str) -> Path:
    return config.stage_dir("segment") / row


def hrT2_volumes(folder: Path | None, labels_dir: Path | None = None) -> list[VolumeToCut]:
    """Every hrT2 volume of a CrossMoDA-layout folder (none when ``folder`` is None), with ``labels_dir/<case>_Label.nii.gz``."""
    if folder is None:
        return []
    return [VolumeToCut(v.case_id, v.image, _truth(labels_dir, v.case_id)) for v in scan_folder(folder) if v.domain == "hrT2"]


def _truth(labels_dir: Path | None, case_id: str) -> Path | None:
    if labels_dir is None:
        return None
    path = Path(labels_dir) / f"{case_id}_Label.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"hrT2 case '{case_id}' has no label: expected '{path}'")
    return path


def hrT2_rois(config: Config, group: str, folder: Path | None, labels_dir: Path | None = None) -> list[RoiCase]:
    """The hrT2 volumes of ``folder`` cut to their ROI under ``<output_dir>/roi/<group>/`` (kept across runs)."""
    return cut_rois(hrT2_volumes(folder, labels_dir), config.ingest, config.stage_dir("roi") / group)


def source_rois(config: Config, train_dir: Path) -> list[RoiCase]:
    """The labelled ceT1 volumes of ``train_dir`` cut to their ROI under ``<output_dir>/roi/ceT1/`` (kept across runs)."""
    volumes = [VolumeToCut(v.case_id, v.image, v.label) for v in scan_folder(train_dir) if v.domain == "ceT1"]
    return cut_rois(volumes, config.ingest, config.stage_dir("roi") / "ceT1")


def reference_cases(config: Config, row: str, train_dir: Path, train_labels_dir: Path | None) -> list[TrainingCase]:
    """Training cases of a reference row: ceT1 + labels (source-only) or real hrT2 + true labels (target-supervised)."""
    if row == SOURCE_ONLY:
        rois = source_rois(config, train_dir)
    elif row == TARGET_SUPERVISED:
        if train_labels_dir is None:
            raise ValueError("the target-supervised row needs data.train_hrT2_labels_dir (truth of the training hrT2)")
        rois = hrT2_rois(config, "hrT2_labelled", train_dir, train_labels_dir)
    else:
        raise ValueError(f"unknown reference row '{row}', expected one of {REFERENCE_ROWS}")
    return [TrainingCase(r.case_id, r.image, r.label) for r in rois if r.label is not None]


def multi_view_cases(translated: Sequence[TranslatedCase], views: Sequence[str]) -> list[TrainingCase]:
    """Pseudo-hrT2 training cases ``<case>__<view>`` of ``views``, grouped by source case so views share a fold."""
    return [
        TrainingCase(f"{c.case_id}{VIEW_SEPARATOR}{c.view}", c.image, c.label, group=c.case_id) for c in translated if c.view in views
    ]


def translated_training_cases(
    translated: Sequence[TranslatedCase], settings: SegmentConfig, folder: Path, views: Sequence[str] | None = None
) -> list[TrainingCase]:
    """The pseudo-hrT2 training cases of ``views`` (unset: ``segment.views``) as :func:`multi_view_cases` makes them.

    With ``segment.translated_smoothing``, each image is first replaced by an
    in-plane smoothed copy under ``folder/smoothed/``
    (:mod:`tanq_ray.segment.smoothing`). With
    ``segment.translated_structure_min_contrast``, each structure a
    translation erased is unlabelled in a copy of that case's label, or
    redrawn in a copy of its image (``segment.translated_erased_structures``),
    under ``folder/erased_structures/`` (:mod:`tanq_ray.segment.erased_structures`).
    """
    cases = multi_view_cases(translated, settings.views if views is None else views)
    if settings.translated_smoothing:
        cases = smoothed_cases(cases, folder / "smoothed")
    if settings.translated_structure_min_contrast is None:
        return cases
    return treat_erased_structures(
        cases,
        folder / "erased_structures",
        settings.translated_structure_min_contrast,
        settings.translated_erased_structures,
        settings.structure_contrast,
    )


def source_labels(translated: Sequence[TranslatedCase]) -> list[Path]:
    """One ROI label volume per labelled source scan (its views share it)."""
    return list({c.case_id: c.label for c in translated}.values())


def refinement_rules(settings: SegmentConfig, source_label_paths: Sequence[Path]) -> tuple[VsLocationPrior | None, CochleaPosition | None]:
    """The location rules of ``segment.refine_vs_location_mm`` and ``segment.refine_one_cochlea_per_side``, read from
    the ROI label volumes of the labelled source scans (None where a rule is off)."""
    margin = settings.refine_vs_location_mm
    vs_prior = None if margin is None else VsLocationPrior.from_labels(source_label_paths, margin)
    cochlea_position = CochleaPosition.from_labels(source_label_paths) if settings.refine_one_cochlea_per_side else None
    return vs_prior, cochlea_position


def segment_and_refine(
    segmenter: Segmenter,
    cases: Sequence[RoiCase],
    folder: Path,
    settings: SegmentConfig,
    source_label_paths: Sequence[Path],
    refine: bool,
) -> dict[str, Path]:
    """Segment ROI volumes into ``folder`` (ROI grid under ``roi/``, full grid beside it); return case id -> ROI label.

    With ``refine``, the raw predictions and their softmax go to ``folder/raw/``
    and the labels written to ``folder`` are refined by the ``segment.refine_*``
    rules (:mod:`tanq_ray.segment.refine`).
    """
    labels = segment_rois(segmenter, cases, folder / ("raw" if refine else ""), save_probabilities=refine)
    if not refine:
        return labels
    vs_prior, cochlea_position = refinement_rules(settings, source_label_paths)
    labels = refine_pseudo_labels(
        labels, folder / ROI_FOLDER, settings.refine_min_confidence, vs_prior, cochlea_position,
        {case.case_id: case.image for case in cases}, settings.refine_vs_max_fluid_share,
    )
    for case in cases:
        paste_back_file(labels[case.case_id], case, folder / f"{case.case_id}.nii.gz")
    return labels


def pseudo_labelled_cases(
    previous: Segmenter, config: Config, index: int, unlabelled: Sequence[RoiCase], source_label_paths: Sequence[Path]
) -> list[TrainingCase]:
    """Real hrT2 ROI volumes with labels predicted by the previous round's model (refined when configured).

    ``source_label_paths``: ROI label volumes of the labelled source scans, which
    the location rules (``segment.refine_vs_location_mm``,
    ``segment.refine_one_cochlea_per_side``) go by.

    The labels are written under ``<round>/pseudo_labels/`` on the full grid
    for the user and on the ROI grid (``roi/``) for training. With
    ``segment.pseudo_label_vs_margin_mm`` the round trains on copies under
    ``training/`` whose margin around the VS is unlabelled
    (:mod:`tanq_ray.segment.margin`); with
    ``segment.pseudo_label_vs_missing_unlabelled`` a copy with no VS leaves
    the region where the location rule allows one unlabelled.
    """
    settings = config.segment
    folder = round_dir(config, index) / "pseudo_labels"
    labels = segment_and_refine(previous, unlabelled, folder, settings, source_label_paths, settings.refine_pseudo_labels)
    margin = settings.pseudo_label_vs_margin_mm
    vs_region = (
        VsLocationPrior.from_labels(source_label_paths, settings.refine_vs_location_mm)
        if settings.pseudo_label_vs_missing_unlabelled
        else None
    )  # the config guarantees refine_vs_location_mm with it

    def trained_on(label: Path) -> Path:
        if margin is None:
            return label
        return write_with_unlabelled_margin(label, folder / "training" / label.name, margin, vs_region)

    return [
        TrainingCase(case.case_id, case.image, trained_on(labels[case.case_id]), partial=margin is not None)
        for case in unlabelled
    ]


def train_and_score(
    settings: SegmentConfig,
    folder: Path,
    cases: Sequence[TrainingCase],
    eval_rois: Sequence[RoiCase],
    eval_labels_dir: Path | None,
    logging: RunRef | None,
    source_label_paths: Sequence[Path] = (),
    warm_start: Segmenter | None = None,
) -> RowResult:
    """Train an nnUNet on ``cases`` in ``folder``, segment the evaluation ROIs, score the pasted-back labels if labelled.

    With ``segment.refine_predictions``, the evaluation predictions are refined
    by the rules of the labelled source scans' ROI labels ``source_label_paths``
    before they are scored; the raw ones are scored as well (``raw_evaluation``).
    ``warm_start``: the model whose weights the training starts from (None = random).
    """
    segmenter = train_segmenter(settings, folder, cases, logging=logging, warm_start=warm_start)
    if not eval_rois:
        return RowResult(segmenter, len(cases), None, None)
    predictions = folder / "eval_predictions"
    refine = settings.refine_predictions
    segment_and_refine(segmenter, eval_rois, predictions, settings, source_label_paths, refine)
    if eval_labels_dir is None:
        return RowResult(segmenter, len(cases), None, predictions)
    raw = evaluate_folder(predictions / "raw", eval_labels_dir) if refine else None
    return RowResult(segmenter, len(cases), evaluate_folder(predictions, eval_labels_dir), predictions, raw)


def round_name(index: int, views: Sequence[str] = TRANSLATOR_NAMES) -> str:
    """How tables name a round: ``multi-view (no self-training)`` (``tanq view ...`` for one view), ``self-training round 1``, ..."""
    if index > 0:
        return f"self-training round {index}"
    return ("multi-view" if len(views) > 1 else f"{views[0]} view") + " (no self-training)"
