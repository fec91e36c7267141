"""Where long work tells the console how far it is, and where worker output goes.

The console of a command (:mod:`tanq_ray.console`) puts one named actor, the
board, into the Ray job. Code anywhere in that job (the driver, a Ray Train
worker, an nnUNet fold task) posts a short line under a key, e.g.
``post("nnUNet round_0", "epoch 3/16")``, and clears it when done; the
console shows what the board holds. Posting never waits and never fails the
caller: without a board (library use, tests) it does nothing.

The board also says where worker output belongs: :func:`worker_output`
sends the calling process's stdout and stderr (at the file-descriptor level,
so nnUNet's subprocesses and C extensions follow) into
``<output_dir>/logs/<name>.log`` for its duration, unless the console streams
everything (``--verbose``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

BOARD_NAME = "tanq-progress-board"


class ProgressBoard:
    """The job's progress lines, ``key -> text``, plus the folder for worker logs (None: stream them)."""

    def __init__(self, log_dir: str | None) -> None:
        self._lines: dict[str, str] = {}
        self._log_dir = log_dir

    def post(self, key: str, text: str) -> None:
        self._lines[key] = text

    def clear(self, key: str) -> None:
        self._lines.pop(key, None)

    def lines(self) -> dict[str, str]:
        return dict(self._lines)

    def log_dir(self) -> str | None:
        return self._log_dir


def open_board(log_dir: Path | None):  # -> ray.actor.ActorHandle
    """Start this job's board (the driver calls this once after ``ray.init``); ``log_dir`` None streams worker output."""
    import ray

    actor = ray.remote(num_cpus=0)(ProgressBoard)  # one task at a time: a caller's post and clear stay in order
    return actor.options(name=BOARD_NAME, get_if_exists=True).remote(None if log_dir is None else str(log_dir))


def _board():
    """This job's board, or None (no Ray, or no console opened one)."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        return ray.get_actor(BOARD_NAME)
    except ValueError:
        return None


def post(key: str, text: str) -> None:
    """Show ``key: text`` in the console's progress display (replacing the key's previous line)."""
    board = _board()
    if board is not None:
        board.post.remote(key, text)


def clear(key: str) -> None:
    """Remove ``key``'s line from the progress display."""
    board = _board()
    if board is not None:
        board.clear.remote(key)


@contextlib.contextmanager
def worker_output(name: str) -> Iterator[Callable[[str], None]]:
    """Send this process's stdout/stderr to ``<log dir>/<name>.log`` while inside; yields ``progress(text)`` for key ``name``.

    Streams as before when no board exists or the console is verbose. An
    exception leaves its traceback in the log before it propagates. The key's
    progress line is cleared on exit.
    """
    import ray

    board = _board()
    log_dir = ray.get(board.log_dir.remote()) if board is not None else None

    def progress(text: str) -> None:
        if board is not None:
            board.post.remote(name, text)

    try:
        if log_dir is None:
            yield progress
            return
        path = Path(log_dir) / f"{name.replace('/', '_').replace(' ', '_')}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with _descriptors_to(path):
            try:
                yield progress
            except BaseException:  # the traceback belongs in this log too, not only in Ray's
                traceback.print_exc()
                raise
    finally:
        if board is not None:
            board.clear.remote(name)


@contextlib.contextmanager
def _descriptors_to(path: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``path`` (appending), then restore them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)
