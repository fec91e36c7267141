"""Stage ``evaluate``: every scored row in one table, the final round's scores, and pictures of the predictions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tanq_ray.config import Config
from tanq_ray.evaluate import comparison_table, evaluate_folder, readable_view
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.overlays import prediction_figure
from tanq_ray.runner import Inputs, Stage, StageContext
from tanq_ray.segment.roi_volumes import ROI_FOLDER
from tanq_ray.self_training import SOURCE_ONLY, TARGET_SUPERVISED, hrT2_rois, round_name
from tanq_ray.setting_kinds import folder_fingerprint
from tanq_ray.stages.data import DataFolders
from tanq_ray.stages.segment import RowOutputs, reference_row_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """The ``evaluate`` stage's outputs: the table (None when nothing could be scored)."""

    table: Path | None

    def to_json(self) -> dict[str, Any]:
        return {"table": None if self.table is None else str(self.table)}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Evaluation":
        return cls(None if values.get("table") is None else Path(values["table"]))


def evaluate_rows(context: StageContext, rows: dict[str, RowOutputs], folders: DataFolders) -> Path | None:
    """The final table in ``<output_dir>/evaluation/``: every scored row, with the gap closed between the reference rows.

    ``rows`` maps row name -> outputs, in table order (source-only, the
    rounds, target-supervised); the last round's predictions are the
    recipe's result (``per_case.csv``, ``summary.json``). p-values are paired
    t-tests of per-case mean Dice against source-only. ``predictions_<case>.png``
    shows every row's prediction on the first evaluation cases.
    """
    config = context.config
    out = config.stage_dir("evaluation")
    labels_dir = folders.eval_labels_dir
    with context.tracker.stage("evaluate", context.parent, params=config.section_params("data")) as run:
        predicted = {name: row.eval_predictions for name, row in rows.items() if row.eval_predictions is not None}
        # scored here, with the labels as they are now: a row trained before labels were added (or fixed) is not retrained
        scored = {name: evaluate_folder(folder, labels_dir).per_case for name, folder in predicted.items()} if labels_dir else {}
        if not scored:
            log.warning("no row was scored (no data.eval_labels_dir): the evaluation table is empty")
            return None
        final_row = [name for name in rows if name not in (SOURCE_ONLY, TARGET_SUPERVISED)][-1]
        final = evaluate_folder(predicted[final_row], labels_dir, out)
        bounds = (SOURCE_ONLY, TARGET_SUPERVISED) if {SOURCE_ONLY, TARGET_SUPERVISED} <= set(scored) else None
        table = comparison_table(scored, reference=SOURCE_ONLY if SOURCE_ONLY in scored else None, bounds=bounds)
        _, comma_separated = table.write(out / "results")
        markdown = write_text_atomic(out / "results.md", readable_view(table).markdown())
        run.log_metrics({k: v for k, v in final.summary.items() if isinstance(v, (int, float))})
        for path in (markdown, comma_separated, final.per_case_path, final.summary_path):
            run.log_artifact(path)
        context.parent.log_artifact(markdown)  # the table where the pipeline's run is opened
        predictions = {name: predicted[name] / ROI_FOLDER for name in scored}
        for picture in prediction_pictures(config, folders, predictions, out):
            run.log_artifact(picture)
            context.parent.log_artifact(picture)
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


def table_rows(config: Config, inputs: Inputs) -> dict[str, RowOutputs]:
    """Row name -> outputs in table order: source-only, round 0..R, then target-supervised."""
    references = {row: inputs[f"segment-{row}"] for row in reference_row_names(config)}
    rounds = {round_name(r, config.segment.views): inputs[f"segment-round-{r}"] for r in range(config.segment.self_training_rounds + 1)}
    return {row: out for row, out in references.items() if row == SOURCE_ONLY} | rounds | {
        row: out for row, out in references.items() if row != SOURCE_ONLY
    }


def evaluate_stage(config: Config) -> Stage:
    """Stage ``evaluate``: needs every row; reads the evaluation labels as they are now."""
    rows = [f"segment-round-{r}" for r in range(config.segment.self_training_rounds + 1)]
    rows += [f"segment-{row}" for row in reference_row_names(config)]
    return Stage(
        name="evaluate",
        outputs=Evaluation,
        run=lambda context, inputs: Evaluation(evaluate_rows(context, table_rows(context.config, inputs), inputs["ingest"])),
        needs=("ingest", *rows),
        reads=lambda config, inputs: {"labels": folder_fingerprint(inputs["ingest"].eval_labels_dir)},
    )
