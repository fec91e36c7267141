"""Atomic file writes: write to a temporary sibling, then rename over the target.

A reader never sees a half-written file, and a crash leaves at most a
``.tmp-*`` file that the next run ignores and overwrites. So a derived file
that exists is whole, and :func:`up_to_date` can keep it on a resumed run.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; rename it to ``target`` on success.

    The suffix of ``target`` is kept (``x.nii.gz`` -> ``.tmp-abc.nii.gz``) so
    libraries that choose a format by extension write the right one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{target.name.removesuffix(suffix)}-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; shared cluster volumes need the usual mode
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def up_to_date(target: Path, *sources: str | Path) -> bool:
    """Whether ``target`` exists and is no older than any of ``sources`` (the files it was made from)."""
    return target.is_file() and target.stat().st_mtime_ns >= max(Path(s).stat().st_mtime_ns for s in sources)


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)
