"""The terminal of one command: a single live progress display, details in log files.

While a :class:`Console` is open:

- our log records go to ``<output_dir>/logs/tanq.log`` (INFO and up); the
  terminal shows warnings and errors only (everything with ``verbose``);
- Ray starts with ``log_to_driver`` off, and the Ray processes that do our
  work write their output to ``<output_dir>/logs/<task>.log``
  (:func:`tanq_ray.progress_board.worker_output`); with ``verbose`` both stream
  to the terminal as Ray normally does;
- one status display on stderr: on a terminal, a single line redrawn in
  place (stages done, running stages, what the board says: epochs, folds,
  volumes, elapsed time); in a log file or ``ray job logs``, a plain line
  per stage change and a progress line at most once a minute.

Results (tables, where the outputs are) go to stdout from the command itself.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol, Sequence, TextIO

LOG_FILE = "tanq.log"
REDRAW_SECONDS = 0.5
PLAIN_PROGRESS_SECONDS = 60.0
QUIET_LOGGERS = ("mlflow", "alembic", "urllib3", "filelock")
"""Libraries whose INFO chatter (database migrations, connections) belongs in the log file only."""

_active: "Console | None" = None


class StageLike(Protocol):
    name: str
    state: str
    seconds: float


def active() -> "Console | None":
    """The console of the running command, if one is open."""
    return _active


def log_dir_of(output_dir: Path) -> Path:
    return Path(output_dir) / "logs"


class Console:
    """Opened by the CLI around one command that writes ``output_dir``; see the module docstring."""

    def __init__(self, title: str, output_dir: Path, verbose: bool = False, stream: TextIO | None = None) -> None:
        self.title = title
        self.log_dir = log_dir_of(output_dir)
        self.verbose = verbose
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()
        self._stages: Sequence[StageLike] = ()
        self._board: Any = None
        self._board_lines: dict[str, str] = {}
        self._drawn = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._last_plain = 0.0
        self._last_plain_text = ""
        self._handlers: list[logging.Handler] = []
        self._displaced: list[logging.Handler] = []
        self._root_level = logging.WARNING
        self._levels: dict[str, int] = {}

    # -- lifetime ---------------------------------------------------------------------------------------------------

    def __enter__(self) -> "Console":
        global _active
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._configure_logging()
        self._started = time.monotonic()
        _active = self
        self._thread = threading.Thread(target=self._refresh, name="tanq-console", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._erase()
        self._close_board()
        _active = None
        root = logging.getLogger()
        for handler in self._handlers:
            root.removeHandler(handler)
            handler.close()
        for handler in self._displaced:
            root.addHandler(handler)
        root.setLevel(self._root_level)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)

    def _configure_logging(self) -> None:
        root = logging.getLogger()
        self._displaced = [h for h in root.handlers if type(h) is logging.StreamHandler]  # basicConfig's would print beside ours
        for handler in self._displaced:
            root.removeHandler(handler)
        self._root_level = root.level
        to_file = logging.FileHandler(self.log_dir / LOG_FILE, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        to_file.setLevel(logging.INFO)
        to_terminal = _AboveStatusHandler(self)
        to_terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        to_terminal.setLevel(logging.INFO if self.verbose else logging.WARNING)
        self._handlers = [to_file, to_terminal]
        for handler in self._handlers:
            root.addHandler(handler)
        root.setLevel(logging.INFO)
        if not self.verbose:
            importlib.import_module("mlflow")  # mlflow sets its logger's level when first imported: before ours
            importlib.import_module("ray.data")  # its logging set-up on first import closes every handler: before ours

            for name in QUIET_LOGGERS:
                library = logging.getLogger(name)
                self._levels[name] = library.level
                library.setLevel(logging.WARNING)

    # -- what Ray needs --------------------------------------------------------------------------------------------

    @property
    def ray_log_to_driver(self) -> bool:
        return self.verbose

    def attach_ray(self) -> None:
        """Open this job's progress board (once Ray is up)."""
        from tanq_ray.progress_board import open_board

        if self._board is None:
            self._board = open_board(None if self.verbose else self.log_dir)
            if not self.verbose:
                self._quiet_ray_data()

    def _close_board(self) -> None:
        """The board names this command's log folder: the next command in this process opens its own."""
        if self._board is None:
            return
        import ray

        try:
            ray.kill(self._board)
        except Exception:  # Ray already shut down: the board went with it
            pass
        self._board = None

    def _quiet_ray_data(self) -> None:
        """Ray Data prints each dataset's plan and progress through its own handler, and warns that its bars are off: errors only."""
        library = logging.getLogger("ray.data")
        self._levels.setdefault("ray.data", library.level)
        library.setLevel(logging.ERROR)

    # -- what the command reports ----------------------------------------------------------------------------------

    def stages(self, states: Sequence[StageLike], changed: StageLike | None = None) -> None:
        """The pipeline's stage list (redrawn); ``changed`` is printed as a plain line when not on a terminal."""
        with self._lock:
            self._stages = states
            if self.interactive:
                self._draw()
            elif changed is not None:
                self._plain(f"{changed.name}: {changed.state}" + _took(changed) + f" ({self._counts()})")

    def write(self, text: str) -> None:
        """A line above the status display (warnings, log records)."""
        with self._lock:
            self._erase()
            self.stream.write(text if text.endswith("\n") else text + "\n")
            self.stream.flush()
            if self.interactive:
                self._draw()

    # -- drawing ---------------------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        while not self._stop.wait(REDRAW_SECONDS):
            self._poll_board()
            with self._lock:
                if self.interactive:
                    self._draw()
                elif time.monotonic() - self._last_plain >= PLAIN_PROGRESS_SECONDS:
                    details = self._details()
                    if details and details != self._last_plain_text:
                        self._last_plain_text = details
                        self._plain(details)

    def _poll_board(self) -> None:
        if self._board is None:
            return
        import ray

        try:
            self._board_lines = ray.get(self._board.lines.remote(), timeout=5)
        except Exception:  # Ray shutting down or busy: keep the last lines, the display is best effort
            pass

    def _counts(self) -> str:
        finished = sum(1 for s in self._stages if s.state in ("done", "cached"))
        return f"{finished}/{len(self._stages)} stages"

    def _details(self) -> str:
        return " · ".join(f"{key}: {text}" for key, text in sorted(self._board_lines.items()))

    def _status(self) -> str:
        parts = [f"[{self.title} {_clock(time.monotonic() - self._started)}]"]
        if self._stages:
            running = [s.name for s in self._stages if s.state == "running"]
            parts.append(self._counts() + (f", running {', '.join(running)}" if running else "") + (" |" if self._board_lines else ""))
        details = self._details()
        if details:
            parts.append(details)
        return " ".join(parts)

    def _draw(self) -> None:
        width = shutil.get_terminal_size((120, 20)).columns - 1
        line = self._status()
        line = line if len(line) <= width else line[: width - 1] + "…"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._drawn = True

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def _plain(self, text: str) -> None:
        self._last_plain = time.monotonic()
        self.stream.write(f"[{self.title} {_clock(self._last_plain - self._started)}] {text}\n")
        self.stream.flush()


class _AboveStatusHandler(logging.Handler):
    """Log records on the console's stream, above its status line."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.write(self.format(record))
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def _took(stage: StageLike) -> str:
    return f" in {stage.seconds:.0f} s" if stage.state in ("done", "failed") else ""


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes:02d}:{rest:02d}"

