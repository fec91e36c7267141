"""One run per output folder: an exclusive lock in ``output_dir`` held for the whole command.

Two commands writing one output folder race: one empties or rewrites folders
the other is reading or writing. Every command that writes there (``tanq
ingest``, ``train``, ``sweep``, ``translate``, ``segment``, ``pipeline``, and
the ``jobs/`` entry points, which call the CLI) takes this lock first; a second
one stops at once with an :class:`OutputFolderBusy` that names the holder
(host, pid, command, start time).

The lock is an advisory ``flock`` on ``<output_dir>/.tanq.lock``, so the
operating system releases it when its holder dies, whatever the cause; the
file's text says who holds it. A holder that exits normally empties that
text. A lock taken over from a holder that died without emptying it (killed,
machine lost) is reported with a warning naming the dead holder, since that
run's last stage may be incomplete (stages resume from their records).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

LOCK_NAME = ".tanq.lock"


class OutputFolderBusy(RuntimeError):
    """Another command holds the output folder's lock; the message names it."""


def _describe(holder: dict[str, object]) -> str:
    return (
        f"'{holder.get('command', '?')}' (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')})"
    )


def _read_holder(handle: int) -> dict[str, object] | None:
    """The holder recorded in the lock file, or None when it is empty or unreadable."""
    os.lseek(handle, 0, os.SEEK_SET)
    text = os.read(handle, 4096).decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return None
    return holder if isinstance(holder, dict) else None


def _write_holder(handle: int, holder: dict[str, object] | None) -> None:
    os.ftruncate(handle, 0)
    if holder is not None:
        os.pwrite(handle, (json.dumps(holder) + "\n").encode("utf-8"), 0)
    os.fsync(handle)


@contextmanager
def output_lock(output_dir: str | Path, command: str) -> Iterator[Path]:
    """Hold ``output_dir``'s lock while the block runs (creating the folder); yields the lock file's path.

    Raises :class:`OutputFolderBusy` at once when another process holds it.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            who = _describe(holder) if holder else "another command"
            raise OutputFolderBusy(
                f"output folder '{folder}' is in use by {who}; wait for it to finish, or choose another "
                f"output_dir=... (the lock is {path})"
            ) from None
        previous = _read_holder(handle)
        if previous is not None:
            log.warning(
                "the previous run %s did not finish cleanly in '%s' (it was stopped or its machine lost); taking "
                "over its output folder: its last stage resumes or is redone from the stage records",
                _describe(previous), folder,
            )
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_holder(handle, {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "started": started})
        try:
            yield path
        finally:
            _write_holder(handle, None)
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)
