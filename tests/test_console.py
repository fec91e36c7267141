"""The console: one status line on a terminal, plain lines in a log, worker output in files, progress from Ray tasks."""

from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tanq_ray import console as console_module
from tanq_ray import progress_board
from tanq_ray.console import Console


@dataclass
class Stage:
    name: str
    state: str = "pending"
    seconds: float = 0.0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_line_is_redrawn_and_log_records_print_above_it(tmp_path: Path) -> None:
    stream = Terminal()
    stages = [Stage("ingest", "done", 3.0), Stage("train-tanq", "running"), Stage("evaluate")]
    with Console("pipeline", tmp_path, stream=stream) as terminal:
        terminal.stages(stages, stages[1])
        logging.getLogger("tanq_ray.test").warning("a volume was skipped")
        logging.getLogger("tanq_ray.test").info("details only in the log file")
    text = stream.getvalue()
    assert "\n" not in text.replace("WARNING tanq_ray.test: a volume was skipped\n", "")  # nothing else ends a line
    assert re.search(r"\r\x1b\[K\[pipeline \d\d:\d\d\] 1/3 stages, running train-tanq", text)
    assert text.endswith("\r\x1b[K")  # the status line is erased when the command ends
    written = (tmp_path / "logs" / "tanq.log").read_text()
    assert "details only in the log file" in written and "a volume was skipped" in written
    assert console_module.active() is None


def test_in_a_log_each_stage_change_is_one_plain_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    stages = [Stage("ingest"), Stage("evaluate")]
    with Console("pipeline", tmp_path, stream=stream) as terminal:
        for stage, state, seconds in ((stages[0], "running", 0.0), (stages[0], "done", 4.2), (stages[1], "cached", 0.0)):
            stage.state, stage.seconds = state, seconds
            terminal.stages(stages, stage)
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "ingest: running (0/2 stages)", "ingest: done in 4 s (1/2 stages)", "evaluate: cached (2/2 stages)",
    ]  # fmt: skip
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_verbose_shows_info_records(tmp_path: Path) -> None:
    stream = io.StringIO()
    with Console("train", tmp_path, verbose=True, stream=stream):
        logging.getLogger("tanq_ray.test").info("streamed")
    assert "INFO tanq_ray.test: streamed" in stream.getvalue()


def test_ray_tasks_post_progress_and_write_their_output_to_a_log_file(ray_local, tmp_path: Path) -> None:
    def task_with_output(name: str) -> str:  # defined here so that Ray ships it by value
        import os

        with progress_board.worker_output(name) as progress:
            progress("epoch 1/2")
            print("chatter from the task", flush=True)
            os.system("echo chatter from a subprocess")
            time.sleep(2.5)  # long enough for the console to poll the board
        return "ok"

    stream = Terminal()
    with Console("segment", tmp_path, stream=stream) as terminal:
        terminal.attach_ray()
        task = ray_local.remote(task_with_output)
        assert ray_local.get(task.remote("nnunet round_0 2d-all")) == "ok"
        shown = stream.getvalue()
    assert "nnunet round_0 2d-all: epoch 1/2" in shown
    written = (tmp_path / "logs" / "nnunet_round_0_2d-all.log").read_text()
    assert "chatter from the task" in written and "chatter from a subprocess" in written
    with pytest.raises(ValueError):  # the console took its board with it
        ray_local.get_actor(progress_board.BOARD_NAME)


def test_a_failing_task_leaves_its_traceback_in_its_log(ray_local, tmp_path: Path) -> None:
    def failing(name: str) -> None:
        with progress_board.worker_output(name):
            raise RuntimeError("nnUNet ran out of patience")

    with Console("segment", tmp_path, stream=io.StringIO()) as terminal:
        terminal.attach_ray()
        with pytest.raises(ray_local.exceptions.RayTaskError):
            ray_local.get(ray_local.remote(failing).remote("nnunet round_1 2d-all"))
    written = (tmp_path / "logs" / "nnunet_round_1_2d-all.log").read_text()
    assert "Traceback" in written and "RuntimeError: nnUNet ran out of patience" in written


def test_posting_without_a_board_does_nothing(ray_local) -> None:
    progress_board.post("nowhere", "epoch 1/1")
    progress_board.clear("nowhere")
    with progress_board.worker_output("nowhere") as progress:
        progress("epoch 1/1")


@pytest.fixture(autouse=True)
def _no_console_left_open():
    yield
    assert console_module.active() is None


def test_a_cleared_line_stays_cleared(ray_local, tmp_path: Path) -> None:
    with Console("ingest", tmp_path, stream=io.StringIO()) as terminal:
        terminal.attach_ray()
        for done in range(50):
            progress_board.post("ingest", f"{done}/50 volumes")
        progress_board.clear("ingest")
        board = ray_local.get_actor(progress_board.BOARD_NAME)
        assert ray_local.get(board.lines.remote()) == {}
