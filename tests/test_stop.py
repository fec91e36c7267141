"""A pipeline stopped with SIGTERM (``kill``, ``ray job stop``) leaves no MLflow run RUNNING."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "phantom.cases=2", "phantom.eval_cases=1", "phantom.size=64", "ingest.image_size=32",
    "models.tanq.ngf=8", "models.tanq.ndf=8", "models.tanq.n_blocks=3", "models.tanq.epochs=50",
    "models.cyclegan.ngf=8", "models.cyclegan.ndf=8", "models.cyclegan.n_blocks=2", "models.cyclegan.epochs=50",
    "tracking.experiment=stop",
]  # fmt: skip


def _runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("stop")
    return [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1000)


def test_sigterm_marks_every_open_run_killed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable, "-m", "tanq_ray.cli", "pipeline", "--config", str(REPO / "configs" / "tiny.yaml"),
        f"output_dir={tmp_path / 'out'}", f"tracking.tracking_uri={uri}", *SMALL,
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(tracking_uri=uri)
    deadline = time.monotonic() + 300
    try:
        while not any(r.data.tags.get("stage") == "train" and r.info.status == "RUNNING" for r in _runs(client)):
            assert process.poll() is None, f"the pipeline ended before training: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "training did not start within 300 s"
            time.sleep(2)
        time.sleep(10)  # let the Ray Train workers open their runs too
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert "stopped" in stderr and "Traceback" not in stderr
    runs = _runs(client)
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert "RUNNING" not in statuses.values(), statuses
    parent = next(r for r in runs if r.data.tags.get("stage") == "invocation")
    assert parent.info.status == "KILLED"
    assert {statuses[name] for name in statuses if name.startswith("train")} == {"KILLED"}
