"""``tanq pipeline``: every stage of the recipe under one MLflow run, with stage caching.

Stages, in order: ingest (after the phantom when ``data.train_dir`` is
unset) -> train TANQ and train CycleGAN (at once when the cluster holds
both) -> translate -> two lanes at once: segmentation round 0 (multi-view)
-> self-training rounds 1..R, beside the reference rows (source-only;
target-supervised when the training hrT2 have truth) -> evaluate. Each stage has a key: a hash of the config sections
it reads (only the settings that change results, :mod:`tanq_ray.setting_kinds`),
the contents of the input folders it reads, and the keys of the stages it
depends on. A finished stage writes ``<output_dir>/pipeline/<stage>.json``
with its key and outputs; running the pipeline again skips every stage whose
key is unchanged, so changing ``segment.epochs`` re-runs the segmentation
rows and the evaluation only, adding evaluation labels re-runs only the
evaluation, and a setting that changes how fast, not what (worker counts,
retries, checkpoint and picture intervals, the tracking server), re-runs
nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from tanq_ray import console, stage_keys, stage_records, stages
from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config
from tanq_ray.tables import Table
from tanq_ray.setting_kinds import folder_fingerprint
from tanq_ray.stage_keys import stage_key
from tanq_ray.self_training import SOURCE_ONLY, TARGET_SUPERVISED, reference_dir, round_dir, round_name
from tanq_ray.stages import TRANSLATORS
from tanq_ray.tracking import RunHandle, Tracker

log = logging.getLogger(__name__)

PSEUDO_LABEL_SETTINGS = {"refine_pseudo_labels", "refine_min_confidence"}
"""Segment settings that only self-training rounds (r >= 1) read: not in the keys of round 0 and the reference rows."""
ADAPTED_ROW_SETTINGS = {"views"}
"""Segment settings that only the adapted rows (round 0 and self-training) read: not in the reference rows' keys."""


def _file_stamp(path: Path) -> tuple[int, int]:
    """Size and modification time: a generator retrained in place changes the translate key."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@dataclass
class StageState:
    """One line of the progress display."""

    name: str
    state: str = "pending"  # pending | running | cached | done | failed
    seconds: float = 0.0
    started: float = 0.0
    """``time.perf_counter()`` when it started running (two translators start together, before either is waited on)."""


@dataclass
class Pipeline:
    """Runs stages in order, skipping those whose key matches their record; shows their states on the console."""

    config: Config
    tracker: Tracker
    parent: RunHandle
    states: list[StageState] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Stages of independent lanes run in threads: state changes reach the console one at a time."""

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
        return stage_records.finished_outputs(self.config, name, key)

    def prepare(self, name: str, key: str, work_dirs: Sequence[Path] = ()) -> None:
        """Record that stage ``name`` starts with ``key`` (its folders: :func:`tanq_ray.stage_records.start`); show it running."""
        stage_records.start(self.config, name, key, work_dirs)
        state = self._state(name)
        if state.state != "running":
            state.state, state.started = "running", time.perf_counter()
            self._show(state)

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
        try:
            outputs = body()
        except BaseException:
            state.state, state.seconds = "failed", time.perf_counter() - state.started
            self._show(state)
            raise
        state.state, state.seconds = "done", time.perf_counter() - state.started
        stage_records.finish(self.config, name, key, outputs, state.seconds)
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


def run_in_lanes(jobs: Sequence[Callable[[], Main]], lanes: int) -> list[Main]:
    """Run ``jobs`` in order with at most ``lanes`` at once, in daemon threads; their results in order, or the first error.

    Daemon threads for the same reason as :func:`run_beside`: an interrupt stops
    the command at once, and what finished is recorded for the next run. After
    a job fails, no new job starts.
    """
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []
    upcoming = iter(range(len(jobs)))
    lock = threading.Lock()

    def lane() -> None:
        while True:
            with lock:
                index = next(upcoming, None)
                if index is None or errors:
                    return
            try:
                results[index] = jobs[index]()
            except BaseException as err:  # handed to the caller below
                with lock:
                    errors.append(err)
                return

    threads = [threading.Thread(target=lane, name=f"lane-{n}", daemon=True) for n in range(max(1, min(lanes, len(jobs))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def reference_inputs(row: str, folders: dict[str, str | None]) -> dict[str, Any]:
    """What a reference row reads beyond the segment settings: the target-supervised row, the training hrT2's truth."""
    return {"truth": folder_fingerprint(folders.get("train_hrT2_labels_dir"))} if row == TARGET_SUPERVISED else {}


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

        ingest_key = stage_keys.ingest_key(config)
        train_keys = {m: stage_keys.train_key(config, m) for m in TRANSLATORS}
        if from_translate:
            folders = stages.data_folder_outputs(stages.data_folders(config, tracker, parent))
            generators = stages.existing_generators(config)
        else:
            folders = pipeline.run("ingest", ingest_key, lambda: stages.ingest_outputs(config, tracker, parent))
            generators = stages.train_translators(config, tracker, parent, pipeline, train_keys)

        translate_key = stage_key({"train": train_keys, "generators": {m: _file_stamp(Path(g)) for m, g in generators.items()}})
        translated = pipeline.run("translate", translate_key, lambda: stages.translate_outputs(config, tracker, parent, generators, folders))

        segment = stage_keys.section(config, "segment")
        pseudo_labelling = {k: segment.pop(k) for k in PSEUDO_LABEL_SETTINGS}
        adapted_only = {k: segment.pop(k) for k in ADAPTED_ROW_SETTINGS}
        segment_inputs = {"segment": segment, "eval": folder_fingerprint(folders["eval_dir"])}

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

        reference_keys = {
            row: stage_key({"ingest": ingest_key, "row": row, **segment_inputs} | reference_inputs(row, folders))
            for row in reference_row_names(config)
        }

        def reference_rows() -> dict[str, dict[str, Any]]:
            return {
                row: pipeline.run(
                    f"segment-{row}",
                    key,
                    lambda row=row: stages.reference_row_outputs(config, tracker, parent, row, folders),
                    work_dirs=[reference_dir(config, row)],
                )
                for row, key in reference_keys.items()
            }

        # The reference rows need no translation: they train beside the adapted rows, each
        # nnUNet fold task holding its own CPU (a cluster with one CPU runs them in turn).
        (rows, previous_key), references = run_beside(adapted_rows, reference_rows)
        table_rows = {name: references[name] for name in references if name == SOURCE_ONLY} | rows
        table_rows |= {name: references[name] for name in references if name != SOURCE_ONLY}

        evaluate_key = stage_key(
            {"rounds": previous_key, "references": reference_keys, "labels": folder_fingerprint(folders["eval_labels_dir"])}
        )
        final = pipeline.run("evaluate", evaluate_key, lambda: stages.evaluate_outputs(config, tracker, parent, table_rows, folders))
        stage_table = pipeline.table()
        parent.log_text(stage_table.markdown(), "stages.md")
    table = Path(final["table"]) if final.get("table") else None
    return PipelineResult(
        config.stage_dir("evaluation"), table.read_text() if table and table.is_file() else None, stage_table, parent.run_id, tracker.ui_hint()
    )
