"""Declared stages and the one runner that orders, keys, records, shows and runs them.

A :class:`Stage` says what it is: its name, the stages whose outputs it
needs, what else changes its result (``reads``: result-changing settings,
fingerprints of the folders it reads), the folders it writes, how much of
the cluster it occupies, and ``run(context, inputs) -> outputs``, where
``outputs`` is a record that writes itself to JSON and reads itself back
(:class:`StageOutputs`). It knows nothing of the other stages.

The :class:`Runner` takes a list of stages and a target:

- it runs only what the target needs, in the list's order;
- a stage's key hashes its ``reads`` and the keys of the stages it needs, so
  a change anywhere upstream reaches every stage below it;
- a stage whose record (:mod:`tanq_ray.stage_records`) holds its key is
  skipped and its outputs read back; the others run and are recorded;
- stages whose needs are met run at once, in threads, while their shares of
  the cluster add up to at most one (the two translators; a reference row
  beside a self-training round); a stage that does not fit waits, and no
  later one overtakes it or takes the room that a stage about to be ready
  (its needs are running) will need;
- it shows every stage's state on the console and keeps the stage table.

``tanq pipeline`` is the runner with the last stage as target; ``tanq
ingest``, ``tanq train``, ``tanq translate`` and ``tanq segment`` are the
runner with an earlier target, and may require that some stages finished
before (``adopt_only``) instead of running them.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar

from tanq_ray import console, stage_records
from tanq_ray.config import Config
from tanq_ray.stage_keys import stage_key
from tanq_ray.tables import Table
from tanq_ray.tracking import RunHandle, Tracker

log = logging.getLogger(__name__)

Out = TypeVar("Out", bound="StageOutputs")


class StageOutputs(Protocol):
    """What a stage hands to the stages after it, as it is kept in the stage's record."""

    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    def from_json(cls: type[Out], values: dict[str, Any]) -> Out: ...


@dataclass(frozen=True)
class StageContext:
    """What every stage runs with: the settings and where to log (its run is a child of ``parent``)."""

    config: Config
    tracker: Tracker
    parent: RunHandle


Inputs = Mapping[str, Any]
"""The outputs of a stage's ``needs``, by stage name."""


def _nothing(config: Config, inputs: Inputs) -> dict[str, Any]:
    return {}


def _no_folders(config: Config) -> list[Path]:
    return []


def _whole_cluster(config: Config, resources: Mapping[str, float]) -> float:
    return 1.0


@dataclass(frozen=True)
class Stage:
    """One unit of work (module docstring)."""

    name: str
    outputs: type
    """The :class:`StageOutputs` class of what ``run`` returns."""
    run: Callable[[StageContext, Inputs], Any]
    needs: tuple[str, ...] = ()
    reads: Callable[[Config, Inputs], dict[str, Any]] = _nothing
    """What changes the result beyond the needed stages' keys (JSON-ready)."""
    keyed_by: tuple[str, ...] | None = None
    """The needs whose keys enter this stage's key (None: all). A stage that uses only part of a need's
    outputs (a study row: its own translators' views among a seed's translations) leaves that need out
    and puts the part it uses in ``reads``, so a change to the rest does not redo it."""
    work_dirs: Callable[[Config], list[Path]] = _no_folders
    """Folders the stage writes: kept when it resumes, emptied when its settings changed (:func:`stage_records.start`)."""
    share: Callable[[Config, Mapping[str, float]], float] = _whole_cluster
    """The fraction of the cluster (given its resources, e.g. ``{"CPU": 2.0}``) it occupies while it runs; 1: it runs alone."""
    made_by: str | None = None
    """The command that finishes this stage on its own, named when a runner needs it finished (``adopt_only``)."""


class StageNotFinished(FileNotFoundError):
    """A stage that a command does not run itself has no finished record with the current settings."""


@dataclass
class StageState:
    """One line of the progress display."""

    name: str
    state: str = "pending"  # pending | running | cached | done | failed
    seconds: float = 0.0
    started: float = 0.0


def stage_tag(name: str) -> str:
    """The parent run's tag saying whether stage ``name`` ran or was cached (MLflow keys allow no brackets or ``=``)."""
    return "stage." + re.sub(r"[^\w\-. :/]", "_", name)


@dataclass
class Runner:
    """Runs declared stages towards a target (module docstring)."""

    context: StageContext
    stages: Sequence[Stage]
    resources: Mapping[str, float]
    """The cluster's resources (``ray.cluster_resources()``), which the stages' shares divide."""
    records: Path
    """Where the stages' records are kept (:mod:`tanq_ray.stage_records`)."""
    states: list[StageState] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for stage in self.stages:
            earlier = names[: names.index(stage.name)]
            unknown = [need for need in stage.needs if need not in earlier]
            if unknown:
                raise ValueError(f"stage '{stage.name}' needs {unknown}, which are not declared before it")
            if stage.keyed_by is not None and not set(stage.keyed_by) <= set(stage.needs):
                raise ValueError(f"stage '{stage.name}' is keyed by {stage.keyed_by}, not all of which it needs")

    def _stage(self, name: str) -> Stage:
        found = [stage for stage in self.stages if stage.name == name]
        if not found:
            raise ValueError(f"unknown stage '{name}', expected one of {[stage.name for stage in self.stages]}")
        return found[0]

    def needed_for(self, targets: Sequence[str]) -> list[Stage]:
        """The stages ``targets`` need, themselves included, in declaration order."""
        wanted: set[str] = set()
        pending = list(targets)
        while pending:
            name = pending.pop()
            if name not in wanted:
                wanted.add(name)
                pending.extend(self._stage(name).needs)
        return [stage for stage in self.stages if stage.name in wanted]

    def run(self, targets: Sequence[str] | None = None, adopt_only: Sequence[str] = ()) -> dict[str, Any]:
        """Outputs of every stage the ``targets`` need (all stages when None), by name.

        Stages in ``adopt_only`` are never run: their finished records are
        used, or :class:`StageNotFinished` names the command that makes them.
        After a stage fails no new stage starts; those running finish (and are
        recorded), then the first error is raised.
        """
        plan = self.needed_for(targets) if targets is not None else list(self.stages)
        self.states = [StageState(stage.name) for stage in plan]
        self._show(None)
        outputs: dict[str, Any] = {}
        running: dict[str, threading.Thread] = {}
        finished: queue.Queue[tuple[str, Any, BaseException | None]] = queue.Queue()
        waiting = list(plan)
        failure: BaseException | None = None
        while True:
            while failure is None and (startable := self._startable(waiting, running, outputs)):
                adoptable = [(stage, recorded) for stage, recorded in startable if recorded is not None]
                for stage, recorded in adoptable or startable:  # recorded ones first: they may make earlier stages ready
                    waiting.remove(stage)
                    if recorded is not None:
                        outputs[stage.name] = self._adopt(stage, recorded)
                    elif stage.name in adopt_only:
                        raise self._not_finished(stage)
                    else:
                        running[stage.name] = self._start(stage, outputs, finished)
            if not running:
                break
            name, result, error = finished.get()
            running.pop(name).join()
            if error is not None:
                failure = failure or error
            else:
                outputs[name] = result
        if failure is not None:
            raise failure
        return outputs

    def _startable(
        self, waiting: list[Stage], running: Mapping[str, threading.Thread], outputs: Mapping[str, Any]
    ) -> list[tuple[Stage, dict[str, Any] | None]]:
        """Waiting stages whose needs are met, in order, with their recorded outputs when their key matches a record.

        Stages to run are taken while they fit beside what runs. None
        overtakes a stage that waits for room, nor takes the room that a
        stage waiting only on running stages will need when they finish (the
        translation, whose translators are finishing, before a reference row
        that could start now). Recorded ones take no room.
        """
        config = self.context.config

        def share_of(stage: Stage) -> float:
            return stage.share(config, self.resources)

        share = sum(share_of(self._stage(name)) for name in running)
        upcoming: list[tuple[float, float]] = []  # (room its running needs free, room it needs) per stage waiting on running ones
        startable: list[tuple[Stage, dict[str, Any] | None]] = []
        for stage in waiting:
            if not all(need in outputs for need in stage.needs):
                if all(need in outputs or need in running for need in stage.needs):
                    upcoming.append((sum(share_of(self._stage(n)) for n in stage.needs if n in running), share_of(stage)))
                continue
            recorded = stage_records.finished_outputs(self.records, stage.name, self._key(stage, outputs))
            want = 0.0 if recorded is not None else share_of(stage)
            fits = share + want <= 1.0 + 1e-9 and all(share + want - freed + need <= 1.0 + 1e-9 for freed, need in upcoming)
            if not fits and (running or any(r is None for _, r in startable)):
                break
            startable.append((stage, recorded))
            share += want
        return startable

    def _not_finished(self, stage: Stage) -> StageNotFinished:
        """Why ``stage`` has no finished record with these settings, and which command makes one."""
        record = stage_records.read_record(self.records, stage.name)
        if record is None:
            why = "has not run"
        elif record.get("state") != "done":
            why = "did not finish"
        else:
            why = "finished with other settings than this command's"
        how = f": run `{stage.made_by}` first, with this command's settings" if stage.made_by else ""
        return StageNotFinished(f"stage '{stage.name}' {why}{how}")

    def _key(self, stage: Stage, outputs: Mapping[str, Any]) -> str:
        """Hash of the stage's ``reads`` and its needs' keys; kept in :attr:`keys`."""
        inputs = {need: outputs[need] for need in stage.needs}
        keyed_by = stage.needs if stage.keyed_by is None else stage.keyed_by
        key = stage_key({"reads": stage.reads(self.context.config, inputs), "needs": {need: self.keys[need] for need in keyed_by}})
        self.keys[stage.name] = key
        return key

    def _adopt(self, stage: Stage, recorded: dict[str, Any]) -> Any:
        self._set(stage.name, "cached")
        self.context.parent.set_tags({stage_tag(stage.name): "cached"})
        return stage.outputs.from_json(recorded)

    def _start(self, stage: Stage, outputs: Mapping[str, Any], finished: queue.Queue) -> threading.Thread:
        """Record the start, then run the stage in a daemon thread (an interrupt stops the command at once)."""
        config = self.context.config
        key = self.keys[stage.name]
        stage_records.start(self.records, stage.name, key, stage.work_dirs(config))
        self._set(stage.name, "running")
        inputs = {need: outputs[need] for need in stage.needs}

        def body() -> None:
            try:
                result = stage.run(self.context, inputs)
                seconds = self._set(stage.name, "done", record=lambda s: stage_records.finish(self.records, stage.name, key, result.to_json(), s))
                self.context.parent.set_tags({stage_tag(stage.name): "ran"})
                log.debug("stage %s done in %.0f s", stage.name, seconds)
                finished.put((stage.name, result, None))
            except BaseException as err:  # handed to the runner's thread
                self._set(stage.name, "failed")
                finished.put((stage.name, None, err))

        thread = threading.Thread(target=body, name=f"stage-{stage.name}", daemon=True)
        thread.start()
        return thread

    def _set(self, name: str, state: str, record: Callable[[float], None] | None = None) -> float:
        """Move stage ``name`` to ``state``; ``record`` gets its seconds before the console hears of it."""
        line = next(s for s in self.states if s.name == name)
        if state == "running":
            line.started = time.perf_counter()
        elif line.started:
            line.seconds = time.perf_counter() - line.started
        if record is not None:
            record(line.seconds)
        line.state = state
        self._show(line)
        return line.seconds

    def _show(self, changed: StageState | None) -> None:
        """Tell the console (or, without one, the log) that ``changed`` has a new state."""
        with self._lock:
            terminal = console.active()
            if terminal is not None:
                terminal.stages(self.states, changed)
            elif changed is not None:
                log.info("stage %s: %s%s", changed.name, changed.state, f" in {changed.seconds:.0f} s" if changed.seconds else "")

    def table(self) -> Table:
        return Table(["stage", "state", "seconds"], [{"stage": s.name, "state": s.state, "seconds": s.seconds} for s in self.states])
