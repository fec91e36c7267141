"""Pipeline lanes: two at once (`run_beside`) or N jobs in K lanes (`run_in_lanes`): results, errors, real overlap."""

from __future__ import annotations

import threading

import pytest

from tanq_ray.pipeline import run_beside, run_in_lanes


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


def test_jobs_run_in_as_many_lanes_as_asked_and_return_in_order() -> None:
    running, most = 0, 0
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=10)

    def job(value: int):
        def body() -> int:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            if value < 2:
                both.wait()  # the first two jobs must be running together
            with lock:
                running -= 1
            return value * 10

        return body

    assert run_in_lanes([job(v) for v in range(5)], lanes=2) == [0, 10, 20, 30, 40]
    assert most == 2


def test_after_a_failed_job_no_new_job_starts() -> None:
    started: list[int] = []

    def job(value: int):
        def body() -> int:
            started.append(value)
            if value == 0:
                raise RuntimeError("row 0 failed")
            return value

        return body

    with pytest.raises(RuntimeError, match="row 0 failed"):
        run_in_lanes([job(v) for v in range(4)], lanes=1)
    assert started == [0]
