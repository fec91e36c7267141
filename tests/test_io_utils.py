import os
from pathlib import Path

import pytest

from tanq_ray.io_utils import atomic_path, write_text_atomic


def test_atomic_writes_get_the_usual_file_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_text_atomic(tmp_path / "a.json", "{}")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_leaves_target_untouched_and_no_temp_file(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "x.nii.gz", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.startswith(".tmp-x-") and tmp.name.endswith(".nii.gz")
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]
