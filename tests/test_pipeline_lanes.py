"""Two pipeline lanes at once: results of both, errors of either, and they really overlap."""

from __future__ import annotations

import threading

import pytest

from tanq_ray.pipeline import run_beside


def test_both_lanes_run_at_once_and_return_their_results() -> None:
    started = threading.Event()

    def main() -> str:
        assert started.wait(timeout=10), "the other lane did not start while this one ran"
        return "rounds"

    def beside() -> str:
        started.set()
        return "references"

    assert run_beside(main, beside) == ("rounds", "references")


def test_an_error_in_either_lane_reaches_the_caller() -> None:
    def fails() -> None:
        raise RuntimeError("fold failed")

    with pytest.raises(RuntimeError, match="fold failed"):
        run_beside(lambda: 1, fails)
    with pytest.raises(RuntimeError, match="fold failed"):
        run_beside(fails, lambda: 1)
