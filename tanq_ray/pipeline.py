"""``tanq pipeline``: every stage of the recipe under one MLflow run, with stage caching.

Stages, in order: ingest (after the phantom when ``data.train_dir`` is
unset) -> train TANQ and train CycleGAN (at once when the cluster holds
both) -> translate -> two lanes at once: segmentation round 0 (multi-view)
-> self-training rounds 1..R, beside the reference rows (source-only;
target-supervised when the training hrT2 have truth) -> evaluate. Each stage has a key: a hash of the config sections
it reads and the keys of the stages it depends on. A finished stage writes
``<output_dir>/pipeline/<stage>.json`` with its key and outputs; running the
pipeline again skips every stage whose key is unchanged, so changing
``segment.*`` re-runs the segmentation rounds and the evaluation only.
Settings that change how fast, not what (worker counts, checkpoint and
picture intervals), are not part of the keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from tanq_ray import console, stages
from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.tables import Table
from tanq_ray.self_training import SOURCE_ONLY, TARGET_SUPERVISED, reference_dir, round_dir, round_name
from tanq_ray.stages import TRANSLATORS
from tanq_ray.tracking import RunHandle, Tracker

log = logging.getLogger(__name__)

PSEUDO_LABEL_SETTINGS = {"refine_pseudo_labels", "refine_min_confidence"}
"""Segment settings that only self-training rounds (r >= 1) read: not in the keys of round 0 and the reference rows."""
ADAPTED_ROW_SETTINGS = {"views"}
"""Segment settings that only the adapted rows (round 0 and self-training) read: not in the reference rows' keys."""

SPEED_ONLY = {
    "train": {"num_workers", "cpus_per_worker", "use_gpu", "bf16", "checkpoint_every", "max_failures", "visual_every"},
    "segment": {"self_training_rounds"},
}


def _section(config: Config, name: str) -> Any:
    values = config.model_dump(mode="json")[name]
    return {k: v for k, v in values.items() if k not in SPEED_ONLY.get(name, set())} if isinstance(values, dict) else values


def _file_stamp(path: Path) -> tuple[int, int]:
    """Size and modification time: a generator retrained in place changes the translate key."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def stage_key(parts: dict[str, Any]) -> str:
    """A short, stable hash of a stage's inputs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageState:
    """One line of the progress display."""

    name: str
    state: str = "pending"  # pending | running | cached | done | failed
    seconds: float = 0.0
    note: str = ""


@dataclass
class Pipeline:
    """Runs stages in order, skipping those whose key matches their record; shows their states on the console."""

    config: Config
    tracker: Tracker
    parent: RunHandle
    states: list[StageState] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Stages of independent lanes run in threads: state changes reach the console one at a time."""

    @property
    def records(self) -> Path:
        return self.config.stage_dir("pipeline")

    def plan(self, names: list[str]) -> None:
        self.states = [StageState(name) for name in names]
        self._show(None)

    def _state(self, name: str) -> StageState:
        return next(state for state in self.states if state.name == name)

    def _show(self, changed: StageState | None) -> None:
        """Tell the console (or, without one, the log) that ``changed`` has a new state."""
        with self.lock:
            terminal = console.active()
            if terminal is not None:
                terminal.stages(self.states, changed)
            elif changed is not None:
                log.info("stage %s: %s%s", changed.name, changed.state, f" in {changed.seconds:.0f} s" if changed.seconds else "")

    def cached(self, name: str, key: str) -> dict[str, Any] | None:
        """The recorded outputs of stage ``name`` when it finished with this ``key``."""
        path = self.records / f"{name}.json"
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record["outputs"] if record.get("key") == key and "outputs" in record else None

    def prepare(self, name: str, key: str, work_dirs: Sequence[Path] = ()) -> None:
        """Record that stage ``name`` starts with ``key``; empty its ``work_dirs`` if they hold a run with another key.

        An interrupted run with the same key keeps its folders, so the stage resumes.
        """
        path = self.records / f"{name}.json"
        earlier = json.loads(path.read_text()).get("key") if path.is_file() else None
        for folder in work_dirs:
            if folder.exists() and earlier != key:
                log.info("stage %s: inputs changed, clearing %s", name, folder)
                shutil.rmtree(folder)
        write_text_atomic(path, json.dumps({"key": key, "state": "running"}))

    def run(self, name: str, key: str, body: Callable[[], dict[str, Any]], work_dirs: Sequence[Path] = ()) -> dict[str, Any]:
        """Outputs of stage ``name``: from its record when ``key`` matches, else by running ``body`` (see :meth:`prepare`)."""
        state = self._state(name)
        outputs = self.cached(name, key)
        if outputs is not None:
            state.state = "cached"
            self.parent.set_tags({f"stage.{name}": "cached"})
            self._show(state)
            return outputs
        self.prepare(name, key, work_dirs)
        state.state = "running"
        self._show(state)
        started = time.perf_counter()
        try:
            outputs = body()
        except BaseException:
            state.state, state.seconds = "failed", time.perf_counter() - started
            self._show(state)
            raise
        state.state, state.seconds = "done", time.perf_counter() - started
        record = {"key": key, "outputs": outputs, "seconds": state.seconds}
        write_text_atomic(self.records / f"{name}.json", json.dumps(record, indent=1, default=str))
        self.parent.set_tags({f"stage.{name}": "ran"})
        self._show(state)
        return outputs

    def table(self) -> Table:
        return Table(["stage", "state", "seconds"], [{"stage": s.name, "state": s.state, "seconds": s.seconds} for s in self.states])


Main = TypeVar("Main")
Beside = TypeVar("Beside")


def run_beside(main: Callable[[], Main], beside: Callable[[], Beside]) -> tuple[Main, Beside]:
    """Run ``beside`` in a thread while ``main`` runs in this one; return both results or raise the first error.

    The thread is a daemon: an interrupt of ``main`` (Ctrl-C) stops the
    pipeline at once instead of waiting for the other lane, whose finished
    stages are recorded and resume on the next run.
    """
    outcome: dict[str, Any] = {}

    def lane() -> None:
        try:
            outcome["value"] = beside()
        except BaseException as err:  # handed to the caller below
            outcome["error"] = err

    thread = threading.Thread(target=lane, name="pipeline-lane", daemon=True)
    thread.start()
    result = main()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return result, outcome["value"]


def reference_row_names(config: Config) -> list[str]:
    """The reference rows the configured data can have (see :func:`tanq_ray.stages.reference_rows`)."""
    has_truth = config.data.train_dir is None or config.data.train_hrT2_labels_dir is not None
    return [SOURCE_ONLY] + ([TARGET_SUPERVISED] if has_truth else [])


def stage_names(config: Config) -> list[str]:
    rounds = [f"segment-round-{r}" for r in range(config.segment.self_training_rounds + 1)]
    references = [f"segment-{row}" for row in reference_row_names(config)]
    return ["ingest", *(f"train-{m}" for m in TRANSLATORS), "translate", *rounds, *references, "evaluate"]


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


def run_pipeline(config: Config, from_translate: bool = False) -> PipelineResult:
    """All stages for ``config``; completed ones with unchanged inputs are skipped.

    ``from_translate`` (``tanq segment``) starts at translation with the
    shards and generators that ``tanq ingest`` / ``tanq train`` left.
    """
    tracker = Tracker(config)
    with tracker.invocation("segment" if from_translate else "pipeline") as parent:
        pipeline = Pipeline(config, tracker, parent)
        names = stage_names(config)
        pipeline.plan(names[names.index("translate") :] if from_translate else names)
        ensure_ray(config)

        ingest_key = stage_key({"data": _section(config, "data"), "phantom": _section(config, "phantom"), "ingest": _section(config, "ingest")})
        train_keys = {m: stage_key({"ingest": ingest_key, "model": config.models.model_dump(mode="json")[m], "train": _section(config, "train")}) for m in TRANSLATORS}
        if from_translate:
            folders = stages.data_folder_outputs(stages.data_folders(config, tracker, parent))
            generators = stages.existing_generators(config)
        else:
            folders = pipeline.run("ingest", ingest_key, lambda: stages.ingest_outputs(config, tracker, parent))
            generators = stages.train_translators(config, tracker, parent, pipeline, train_keys)

        translate_key = stage_key({"train": train_keys, "generators": {m: _file_stamp(Path(g)) for m, g in generators.items()}})
        translated = pipeline.run("translate", translate_key, lambda: stages.translate_outputs(config, tracker, parent, generators, folders))

        segment = _section(config, "segment")
        pseudo_labelling = {k: segment.pop(k) for k in PSEUDO_LABEL_SETTINGS}
        adapted_only = {k: segment.pop(k) for k in ADAPTED_ROW_SETTINGS}
        segment_inputs = {"segment": segment, "eval": folders["eval_dir"]}

        def adapted_rows() -> tuple[dict[str, dict[str, Any]], str]:
            """Round 0 then each self-training round; returns the rows and the last round's key."""
            rows: dict[str, dict[str, Any]] = {}
            key = stage_key({"translate": translate_key, "adapted": adapted_only, **segment_inputs})
            for index in range(config.segment.self_training_rounds + 1):
                key = stage_key({"previous": key, "round": index} | ({"pseudo_labels": pseudo_labelling} if index else {}))
                rows[round_name(index, config.segment.views)] = outputs = pipeline.run(
                    f"segment-round-{index}",
                    key,
                    lambda index=index: stages.segment_round_outputs(config, tracker, parent, index, translated, folders),
                    work_dirs=[round_dir(config, index)],
                )
                if outputs.get("summary"):
                    parent.log_metrics({k: v for k, v in outputs["summary"].items() if isinstance(v, (int, float))}, step=index)
            return rows, key

        def reference_rows() -> dict[str, dict[str, Any]]:
            return {
                row: pipeline.run(
                    f"segment-{row}",
                    stage_key({"ingest": ingest_key, "row": row, **segment_inputs}),
                    lambda row=row: stages.reference_row_outputs(config, tracker, parent, row, folders),
                    work_dirs=[reference_dir(config, row)],
                )
                for row in reference_row_names(config)
            }

        # The reference rows need no translation: they train beside the adapted rows, each
        # nnUNet fold task holding its own CPU (a cluster with one CPU runs them in turn).
        (rows, previous_key), references = run_beside(adapted_rows, reference_rows)
        table_rows = {name: references[name] for name in references if name == SOURCE_ONLY} | rows
        table_rows |= {name: references[name] for name in references if name != SOURCE_ONLY}

        evaluate_key = stage_key({"rounds": previous_key, "references": {r: references[r].get("summary") for r in references}})
        final = pipeline.run("evaluate", evaluate_key, lambda: stages.evaluate_outputs(config, tracker, parent, table_rows, folders))
        stage_table = pipeline.table()
        parent.log_text(stage_table.markdown(), "stages.md")
    table = Path(final["table"]) if final.get("table") else None
    return PipelineResult(
        config.stage_dir("evaluation"), table.read_text() if table and table.is_file() else None, stage_table, parent.run_id, tracker.ui_hint()
    )
