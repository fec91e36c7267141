"""One run per output folder: a second command stops at once naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tanq_ray.cli import main
from tanq_ray.output_lock import LOCK_NAME, OutputFolderBusy, output_lock

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from tanq_ray.output_lock import output_lock
with output_lock(sys.argv[1], "tanq pipeline"):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def test_a_second_command_stops_at_once_naming_the_holder(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "out")
    try:
        with pytest.raises(OutputFolderBusy, match=rf"'tanq pipeline' \(pid {holder.pid} on .*, started "):
            with output_lock(tmp_path / "out", "tanq segment"):
                pytest.fail("the lock was granted twice")
    finally:
        holder.kill()
        holder.wait()


def test_the_cli_refuses_a_busy_output_folder_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        # a missing data folder: were the lock ignored, the run would fail fast instead of training
        overrides = [f"output_dir={out}", f"data.train_dir={tmp_path / 'missing'}"]
        code = main(["pipeline", "--config", str(REPO / "configs" / "tiny.yaml"), *overrides])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert f"is in use by 'tanq pipeline' (pid {holder.pid}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing started: no MLflow, no stage folders


def test_a_killed_holders_lock_is_taken_over_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with caplog.at_level(logging.WARNING, logger="tanq_ray.output_lock"):
        with output_lock(tmp_path, "tanq pipeline") as lock:
            recorded = json.loads(lock.read_text())
            assert recorded["pid"] == os.getpid() and recorded["command"] == "tanq pipeline"
    assert f"pid {holder.pid}" in caplog.text and "did not finish cleanly" in caplog.text
    assert (tmp_path / LOCK_NAME).read_text() == ""  # a clean exit leaves no holder behind
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tanq_ray.output_lock"):
        with output_lock(tmp_path, "tanq ingest"):
            pass
    assert caplog.text == ""  # after a clean exit there is nothing to warn about
