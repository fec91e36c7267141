"""``tanq pipeline``: the recipe's stages in order, run by :class:`~tanq_ray.runner.Runner` under one MLflow run.

Stages: ingest (after the phantom when ``data.train_dir`` is unset) ->
train-tanq and train-cyclegan (at once when the cluster holds both) ->
translate -> segmentation round 0 (multi-view) -> self-training rounds
1..R, with the reference rows (source-only; target-supervised when the
training hrT2 have truth) beside them -> evaluate. The runner keys each
stage by the settings that change its result (:mod:`tanq_ray.setting_kinds`),
the contents of the folders it reads and the keys of the stages it needs,
and skips those whose record holds that key: changing ``segment.epochs``
re-runs the segmentation rows and the evaluation only, adding evaluation
labels re-runs only the evaluation, and a setting that changes how fast,
not what (worker counts, retries, checkpoint and picture intervals, the
tracking server), re-runs nothing.

``tanq ingest``, ``tanq train``, ``tanq translate`` and ``tanq segment``
are the same runner with an earlier target (:data:`COMMAND_TARGETS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import ray

from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config
from tanq_ray.runner import Runner, Stage, StageContext
from tanq_ray.stage_records import records_dir
from tanq_ray.stages.data import INGEST
from tanq_ray.stages.evaluate import evaluate_stage
from tanq_ray.stages.segment import reference_row_names, reference_stage, round_stage
from tanq_ray.stages.train import TRAIN_STAGES
from tanq_ray.stages.translate import TRANSLATE
from tanq_ray.tables import Table
from tanq_ray.tracking import Tracker


def pipeline_stages(config: Config) -> list[Stage]:
    """Every stage of the recipe for ``config``, in the order they are shown and started."""
    rounds = [round_stage(index) for index in range(config.segment.self_training_rounds + 1)]
    references = [reference_stage(row) for row in reference_row_names(config)]
    return [INGEST, *TRAIN_STAGES, TRANSLATE, *rounds, *references, evaluate_stage(config)]


def stage_names(config: Config) -> list[str]:
    return [stage.name for stage in pipeline_stages(config)]


@dataclass(frozen=True)
class PipelineResult:
    """The final table (rounds x Dice/ASSD) and where the evaluation landed."""

    evaluation_dir: Path
    table_markdown: str | None
    stages: Table
    run_id: str
    """The pipeline's MLflow run (every stage is a child of it)."""
    tracking_hint: str
    """How to open the tracking store (:meth:`~tanq_ray.tracking.Tracker.ui_hint`)."""


def run_stages(
    config: Config, command: str, targets: Sequence[str] | None = None, adopt_only: Sequence[str] = (), tags: dict[str, str] | None = None
) -> tuple[dict[str, Any], Table, str, str]:
    """Run the recipe's stages towards ``targets`` under one MLflow run of ``command``.

    Returns the stages' outputs, the stage table, the run id and how to open the tracking store.
    """
    tracker = Tracker(config)
    with tracker.invocation(command, tags=tags) as parent:
        ensure_ray(config)
        runner = Runner(StageContext(config, tracker, parent), pipeline_stages(config), ray.cluster_resources(), records_dir(config))
        outputs = runner.run(targets, adopt_only)
        for index in range(config.segment.self_training_rounds + 1):
            summary = getattr(outputs.get(f"segment-round-{index}"), "summary", None) or {}
            if summary:  # the run charts the rounds (step = round), cached ones too
                parent.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))}, step=index)
        stage_table = runner.table()
        parent.log_text(stage_table.markdown(), "stages.md")
    return outputs, stage_table, parent.run_id, tracker.ui_hint()


def run_pipeline(config: Config, from_translate: bool = False) -> PipelineResult:
    """All stages for ``config``; completed ones with unchanged inputs are skipped.

    ``from_translate`` (``tanq segment``) runs from translation on, with the
    shards and generators that ``tanq ingest`` / ``tanq train`` finished.
    """
    adopt_only = [INGEST.name, *(stage.name for stage in TRAIN_STAGES)] if from_translate else []
    outputs, stage_table, run_id, hint = run_stages(config, "segment" if from_translate else "pipeline", adopt_only=adopt_only)
    table = outputs["evaluate"].table
    return PipelineResult(
        config.stage_dir("evaluation"), table.read_text() if table and table.is_file() else None, stage_table, run_id, hint
    )

