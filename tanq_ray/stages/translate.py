"""Stage ``translate``: every ceT1 volume -> one pseudo-hrT2 region-of-interest volume per trained translator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config
from tanq_ray.data.shards import Manifest
from tanq_ray.models.config import TRANSLATOR_NAMES
from tanq_ray.overlays import translation_figure
from tanq_ray.runner import Inputs, Stage, StageContext
from tanq_ray.segment.roi_volumes import VolumeToCut, cut_rois
from tanq_ray.stages.train import trained_generators
from tanq_ray.tracking import RunHandle, Tracker
from tanq_ray.translate import TranslatedCase, TranslateResult, translate_cohort


@dataclass(frozen=True)
class Translations:
    """The ``translate`` stage's outputs: one :class:`TranslatedCase` per ceT1 volume and view."""

    cases: list[TranslatedCase]

    def to_json(self) -> dict[str, Any]:
        return {"cases": [case.to_json() for case in self.cases]}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Translations":
        return cls([TranslatedCase.from_json(case) for case in values["cases"]])


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


def _translate(context: StageContext, inputs: Inputs) -> Translations:
    folders = inputs["ingest"]
    result = translate_stage(context.config, context.tracker, context.parent, trained_generators(inputs), folders.train_hrT2_labels_dir)
    return Translations(result.cases)


def _file_stamp(path: Path) -> tuple[int, int]:
    """Size and modification time: a generator retrained in place changes the translate key."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


TRANSLATE = Stage(
    name="translate",
    outputs=Translations,
    run=_translate,
    needs=("ingest", *(f"train-{model}" for model in TRANSLATOR_NAMES)),
    reads=lambda config, inputs: {"generators": {view: _file_stamp(path) for view, path in trained_generators(inputs).items()}},
)
"""Reads the shards and the generators (their training keys, and the files as they are now)."""
