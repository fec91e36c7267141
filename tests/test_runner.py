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
    with pytest.raises(StageNotFinished, match=r"stage 'a' has not finished with these settings: run `tanq ingest` first"):
        _runner(config, stages).run(["b"], adopt_only=["a"])
    _runner(config, stages).run(["a"])
    assert _runner(config, stages).run(["b"], adopt_only=["a"])["b"] == Value(11)


def test_stages_run_at_once_while_their_shares_fit_and_none_overtakes_one_that_waits(config: Config) -> None:
    half = lambda config, resources: 1.0 / resources["CPU"]  # noqa: E731
    together = threading.Barrier(2, timeout=10)
    order: list[str] = []
    lock = threading.Lock()

    def run(name: str, wait: bool = False, linger: float = 0.0):
        def body(context: StageContext, inputs: Inputs) -> Value:
            with lock:
                order.append(f"{name} start")
            if wait:
                together.wait()  # both halves must be running at the same time
            time.sleep(linger)  # "right" has ended: room for half the cluster, not for all of it
            with lock:
                order.append(f"{name} end")
            return Value(0)

        return body

    stages = [
        Stage("left", Value, run("left", wait=True, linger=0.5), share=half),
        Stage("right", Value, run("right", wait=True), share=half),
        Stage("whole", Value, run("whole"), needs=("right",)),
        Stage("small", Value, run("small"), share=half),
    ]
    _runner(config, stages).run()
    assert set(order[:2]) == {"left start", "right start"}
    # once "right" ended, "whole" is ready but needs the cluster: "small" (declared after it) waits instead of filling the gap
    assert order.index("left end") < order.index("whole start") < order.index("whole end") < order.index("small start")


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
