"""A killed study, run again, trains nothing that had finished (slow: a real micro study, twice)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tanq_ray.cli import main

pytestmark = pytest.mark.slow

STUDY = "micro"


def _settings(out: Path) -> list[str]:
    """A study of three rows, a grid variant of one, and one seed on a 2 + 2-subject phantom at 32 x 32, with short trainings."""
    return [
        "--config", "configs/tiny.yaml", f"output_dir={out}", f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}",
        "phantom.cases=2", "phantom.eval_cases=2", "phantom.size=64", "ingest.image_size=32", "train.crop_size=32",
        "models.cyclegan.epochs=2", "models.cyclegan.ngf=8", "models.cyclegan.ndf=8", "models.cyclegan.n_blocks=1",
        "segment.epochs=1", "segment.iterations_per_epoch=5", "segment.batch_size=2", "segment.network_width=4",
        f"study.name={STUDY}", "study.rows=[cyclegan,source-only,target-supervised]", "study.compare_to=cyclegan", "study.seeds=[0]",
        'study.grid={"models.cyclegan.lambda_identity": [0.0]}',
    ]  # fmt: skip


def _record(out: Path, stage: str) -> dict:
    path = out / "study" / STUDY / "pipeline" / f"{stage}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def test_a_killed_study_resumes_without_retraining_what_finished(tmp_path: Path) -> None:
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[1]
    tanq = Path(sys.executable).with_name("tanq")
    first = subprocess.Popen([str(tanq), "study", *_settings(out)], cwd=repo, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 900
    while _record(out, "CycleGAN seed 0").get("state") != "done" and time.monotonic() < deadline:
        assert first.poll() is None, "the study ended before its first row finished"
        time.sleep(2)
    assert _record(out, "CycleGAN seed 0").get("state") == "done", "the first row did not finish within 15 minutes"
    os.killpg(first.pid, signal.SIGTERM)  # the driver and its local Ray node, mid-study
    first.wait(timeout=120)
    assert _record(out, "table") == {}  # killed before the end

    trial = next((out / "sweep").glob(f"{STUDY}-translators-*/trials/*cyclegan*"))
    row_checkpoint = next((out / "study" / STUDY / "seed-0" / "cyclegan-seed0").rglob("checkpoint_final.pth"))
    stamps = {trial / "trial.json": (trial / "trial.json").stat().st_mtime_ns, row_checkpoint: row_checkpoint.stat().st_mtime_ns}

    assert main(["study", *_settings(out)]) == 0
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp, f"{path} was written again: a finished stage was redone"
    assert json.loads((trial / "trial.json").read_text())["attempts"] == 1
    for stage in ("translators", "CycleGAN seed 0", "CycleGAN [lambda_identity=0.0] seed 0", "source-only seed 0", "target-supervised seed 0", "table"):
        assert _record(out, stage).get("state") == "done", stage
    table = (out / "study" / STUDY / "results.md").read_text()
    assert all(f"| {row} |" in table for row in ("CycleGAN", "CycleGAN [lambda_identity=0.0]", "source-only", "target-supervised"))
    ledger = json.loads((out / "study" / STUDY / "translators.json").read_text())
    assert len(ledger) == 2  # CycleGAN with and without the grid's identity weight
