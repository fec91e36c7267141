"""The stage runner: order, keys from settings and upstream keys, records, stages at once by their share, errors."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tanq_ray.config import Config, load_config
from tanq_ray.runner import Inputs, Runner, Stage, StageContext, StageNotFinished


@dataclass(frozen=True)
class Value:
    """A stage output that writes and reads itself."""

    value: int

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Value":
        return cls(values["value"])


class FakeRun:
    """Stands in for the command's MLflow run: the runner only tags it."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(None, [f"output_dir={tmp_path}", "segment.epochs=3"])


def _runner(config: Config, stages: list[Stage], cpus: float = 2.0) -> Runner:
    return Runner(StageContext(config, None, FakeRun()), stages, {"CPU": cpus}, config.output_dir / "records")  # type: ignore[arg-type]


def _graph(calls: list[str], reads_epochs: bool = True) -> list[Stage]:
    """a -> b (reads segment.epochs) -> c; d needs only a."""

    def body(name: str, plus: int):
        def run(context: StageContext, inputs: Inputs) -> Value:
            calls.append(name)
            return Value(sum(v.value for v in inputs.values()) + plus)

        return run

    return [
        Stage("a", Value, body("a", 1)),
        Stage("b", Value, body("b", 10), needs=("a",), reads=lambda config, inputs: {"epochs": config.segment.epochs} if reads_epochs else {}),
        Stage("c", Value, body("c", 100), needs=("b",)),
        Stage("d", Value, body("d", 1000), needs=("a",)),
    ]


def test_a_target_runs_what_it_needs_in_order_and_hands_outputs_down(config: Config) -> None:
    calls: list[str] = []
    outputs = _runner(config, _graph(calls)).run(["c"])
    assert calls == ["a", "b", "c"] and "d" not in outputs
    assert outputs["c"] == Value(111)


def test_a_changed_setting_reruns_its_stage_and_every_stage_below_only(config: Config) -> None:
    calls: list[str] = []
    _runner(config, _graph(calls)).run()
    assert sorted(calls) == ["a", "b", "c", "d"]
    calls.clear()
    again = _runner(config, _graph(calls)).run()
    assert calls == [] and again["c"] == Value(111)  # every stage read back from its record
    calls.clear()
    changed = config.model_copy(update={"segment": config.segment.model_copy(update={"epochs": 4})})
    runner = _runner(changed, _graph(calls))
    runner.run()
    assert calls == ["b", "c"]  # a and d do not read segment.epochs, b does, c is below b
    assert {row["stage"]: row["state"] for row in runner.table().rows} == {"a": "cached", "b": "done", "c": "done", "d": "cached"}


def test_keyed_by_leaves_a_need_out_of_the_key(config: Config) -> None:
    calls: list[str] = []
    stages = _graph(calls)
    stages[2] = Stage("c", Value, lambda context, inputs: Value(5), needs=("b",), keyed_by=())
    _runner(config, stages).run()
    changed = config.model_copy(update={"segment": config.segment.model_copy(update={"epochs": 4})})
    runner = _runner(changed, stages)
    runner.run()
    assert {row["stage"]: row["state"] for row in runner.table().rows}["c"] == "cached"


def test_a_stage_that_must_have_finished_names_the_command_that_makes_it(config: Config) -> None:
    calls: list[str] = []
    stages = _graph(calls)
    stages[0] = Stage("a", Value, lambda context, inputs: Value(1), made_by="tanq ingest")
    with pytest.raises(StageNotFinished, match=r"stage 'a' has not run: run `tanq ingest` first, with this command's settings"):
        _runner(config, stages).run(["b"], adopt_only=["a"])
    _runner(config, stages).run(["a"])
    assert _runner(config, stages).run(["b"], adopt_only=["a"])["b"] == Value(11)
    stages[0] = Stage("a", Value, lambda context, inputs: Value(1), reads=lambda config, inputs: {"other": 1}, made_by="tanq ingest")
    with pytest.raises(StageNotFinished, match=r"stage 'a' finished with other settings than this command's: run `tanq ingest`"):
        _runner(config, stages).run(["b"], adopt_only=["a"])


def _timed(order: list[str], name: str, barrier: threading.Barrier | None = None, linger: float = 0.0):
    """A stage body that notes its start and end in ``order``; waits at ``barrier``, then ``linger`` seconds."""
    lock = threading.Lock()

    def body(context: StageContext, inputs: Inputs) -> Value:
        with lock:
            order.append(f"{name} start")
        if barrier is not None:
            barrier.wait()
        time.sleep(linger)
        with lock:
            order.append(f"{name} end")
        return Value(0)

    return body


def _half(config: Config, resources: dict[str, float]) -> float:
    return 1.0 / resources["CPU"]


def test_stages_run_at_once_while_their_shares_fit_and_none_overtakes_one_that_waits_for_room(config: Config) -> None:
    order: list[str] = []
    both = threading.Barrier(2, timeout=10)  # "left" and "right" must be running at the same time
    stages = [
        Stage("left", Value, _timed(order, "left", both, linger=0.5), share=_half),
        Stage("right", Value, _timed(order, "right", both), share=_half),
        Stage("whole", Value, _timed(order, "whole"), needs=("right",)),
        Stage("small", Value, _timed(order, "small"), share=_half),
    ]
    _runner(config, stages).run()
    assert set(order[:2]) == {"left start", "right start"}
    # once "right" ended, "whole" is ready but needs the cluster: "small" (declared after it) waits instead of filling the gap
    assert order.index("left end") < order.index("whole start") < order.index("whole end") < order.index("small start")


def test_a_stage_about_to_be_ready_keeps_the_room_it_will_need(config: Config) -> None:
    order: list[str] = []
    both = threading.Barrier(2, timeout=10)
    stages = [  # two translators, then the translation (the whole cluster), and a reference row that needs neither
        Stage("tanq", Value, _timed(order, "tanq", both, linger=0.5), share=_half),
        Stage("cyclegan", Value, _timed(order, "cyclegan", both), share=_half),
        Stage("translate", Value, _timed(order, "translate"), needs=("tanq", "cyclegan")),
        Stage("reference", Value, _timed(order, "reference"), share=_half),
    ]
    _runner(config, stages).run()
    assert order.index("translate end") < order.index("reference start")  # it did not take the room while "tanq" finished


def test_a_stage_about_to_be_ready_that_will_fit_holds_nothing_back(config: Config) -> None:
    order: list[str] = []
    beside = threading.Barrier(2, timeout=10)  # round 0 and the reference row must run at the same time
    stages = [
        Stage("round-0", Value, _timed(order, "round-0", beside), share=_half),
        Stage("round-1", Value, _timed(order, "round-1"), needs=("round-0",), share=_half),
        Stage("reference", Value, _timed(order, "reference", beside), share=_half),
    ]
    _runner(config, stages).run()
    assert order.index("reference start") < order.index("round-0 end")


def test_recorded_stages_are_adopted_before_anything_starts(config: Config) -> None:
    order: list[str] = []
    stages = [  # "translate" finished before; round 0 needs it and is declared before the reference rows
        Stage("translate", Value, _timed(order, "translate")),
        Stage("round-0", Value, _timed(order, "round-0", linger=0.2), needs=("translate",), share=_half),
        Stage("source-only", Value, _timed(order, "source-only", linger=0.2), share=_half),
        Stage("target-supervised", Value, _timed(order, "target-supervised"), share=_half),
    ]
    _runner(config, stages).run(["translate"])
    order.clear()
    _runner(config, stages).run()
    assert "translate start" not in order
    assert set(order[:2]) == {"round-0 start", "source-only start"}  # not both reference rows ahead of round 0


def test_after_a_failure_no_new_stage_starts_and_the_error_reaches_the_caller(config: Config) -> None:
    calls: list[str] = []

    def fails(context: StageContext, inputs: Inputs) -> Value:
        raise RuntimeError("fold failed")

    stages = _graph(calls)
    stages[1] = Stage("b", Value, fails, needs=("a",))
    runner = _runner(config, stages)
    with pytest.raises(RuntimeError, match="fold failed"):
        runner.run()
    states = {row["stage"]: row["state"] for row in runner.table().rows}
    assert states["b"] == "failed" and states["c"] == "pending" and "c" not in calls
    assert _runner(config, _graph([])).run(["a"])["a"] == Value(1)  # "a" finished and was recorded


def test_declarations_are_checked(config: Config) -> None:
    with pytest.raises(ValueError, match="needs \\['b'\\], which are not declared before it"):
        _runner(config, [Stage("a", Value, lambda c, i: Value(0), needs=("b",)), Stage("b", Value, lambda c, i: Value(0))])
    with pytest.raises(ValueError, match="unique"):
        _runner(config, [Stage("a", Value, lambda c, i: Value(0))] * 2)
    with pytest.raises(ValueError, match="unknown stage 'e', expected one of \\['a', 'b', 'c', 'd'\\]"):
        _runner(config, _graph([])).run(["e"])
