"""Best-effort MLflow logging for training loops: a tracking outage never stops training.

Per-epoch metrics and pictures are what training reports while it runs; a
tracking server that is restarted or briefly unreachable must not kill a
translator's Ray Train worker or an nnUNet fold (which would restart from a
checkpoint up to 50 epochs old). :class:`BackgroundLog` queues every record
and sends it from a background thread, in order. When a send fails it warns
once, keeps the record, and retries every ``retry_seconds`` (doubling up to
``max_retry_seconds``); when the server answers again it sends the backlog
and says so. :meth:`BackgroundLog.close` waits for the backlog at the end of
the loop and returns whether everything arrived.

Results that decide what a stage produced (the stage's summary metrics, the
evaluation table) are still logged directly by the driver and fail loudly.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from tanq_ray.tracking import RunHandle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Metrics:
    values: dict[str, float]
    step: int | None


@dataclass(frozen=True)
class _Artifact:
    path: Path
    folder: str | None


@dataclass(frozen=True)
class _Image:
    pixels: np.ndarray
    key: str
    step: int


_Record = _Metrics | _Artifact | _Image


class BackgroundLog:
    """Queue metrics and artifacts for ``run`` and send them from a daemon thread (see module docstring)."""

    def __init__(self, run: RunHandle, retry_seconds: float = 5.0, max_retry_seconds: float = 60.0) -> None:
        self.run = run
        self.retry_seconds, self.max_retry_seconds = retry_seconds, max_retry_seconds
        self._pending: deque[_Record] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._copies = Path(tempfile.mkdtemp(prefix="tanq-mlflow-backlog-"))
        self._copied = 0
        self._thread = threading.Thread(target=self._send_forever, name=f"mlflow-{run.run_id[:8]}", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Queue one set of metrics (returns at once)."""
        self._queue(_Metrics({key: float(value) for key, value in metrics.items()}, step))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Queue a copy of the file at ``path`` (callers may delete theirs as soon as this returns)."""
        source = Path(path)
        self._copied += 1
        copy = self._copies / str(self._copied)
        copy.mkdir()
        target = copy / source.name
        shutil.copy2(source, target)
        self._queue(_Artifact(target, artifact_path))

    def log_image(self, pixels: np.ndarray, key: str, step: int) -> None:
        """Queue an ``(H, W, 3)`` uint8 picture under ``key`` at ``step`` (MLflow's image history, compared across runs)."""
        self._queue(_Image(np.array(pixels, copy=True), key, step))

    def close(self, timeout: float = 180.0) -> bool:
        """Wait up to ``timeout`` s for the backlog; True when every record reached MLflow."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        self._thread.join(timeout)
        left = len(self._pending)
        if left:
            log.warning(
                "%d tracking record(s) of MLflow run %s could not be sent within %.0f s and are lost "
                "(training results on disk are unaffected)",
                left, self.run_id, timeout,
            )
        else:
            shutil.rmtree(self._copies, ignore_errors=True)
        return left == 0

    def _queue(self, record: _Record) -> None:
        with self._wake:
            self._pending.append(record)
            self._wake.notify_all()

    def _send(self, record: _Record) -> None:
        if isinstance(record, _Metrics):
            self.run.log_metrics(record.values, step=record.step)
        elif isinstance(record, _Image):
            self.run.log_image(record.pixels, record.key, record.step)
        else:
            self.run.log_artifact(record.path, record.folder)
            shutil.rmtree(record.path.parent, ignore_errors=True)

    def _send_forever(self) -> None:
        delay, failing_since = self.retry_seconds, None
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return
                record = self._pending[0]
            try:
                self._send(record)
            except Exception as err:  # any failure of the tracking server or the network: keep the record
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "MLflow is unreachable for run %s (%s: %s); training goes on, its metrics and pictures "
                        "wait and are retried",
                        self.run_id, type(err).__name__, str(err)[:200],
                    )
                with self._wake:
                    self._wake.wait(delay)
                delay = min(2 * delay, self.max_retry_seconds)
                continue
            with self._wake:
                self._pending.popleft()
            if failing_since is not None:
                log.warning(
                    "MLflow answers again for run %s after %.0f s; sending the %d waiting record(s)",
                    self.run_id, time.monotonic() - failing_since, len(self._pending) + 1,
                )
                delay, failing_since = self.retry_seconds, None
