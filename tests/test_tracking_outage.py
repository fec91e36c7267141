"""A tracking outage never stops training: a real `mlflow server` is stopped mid-run and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from mlflow import MlflowClient

from tanq_ray.tracking import RunHandle
from tanq_ray.tracking_buffer import BackgroundLog
from test_cluster import free_port, wait_for

BIN = Path(sys.executable).parent
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class Server:
    """``mlflow server`` on a SQLite store and a local artifact folder; stop and start keep both."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_for(f"{self.url}/health", 180)

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the port refuses connections
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1)
            except OSError:
                return
            time.sleep(0.5)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for key, value in FAIL_FAST.items():  # an unreachable server fails a call at once instead of after minutes
        monkeypatch.setenv(key, value)
    running = Server(tmp_path)
    try:
        running.start()  # inside: a server that never answers is stopped too, not left behind
        yield running
    finally:
        running.stop()


def test_records_logged_during_an_outage_arrive_after_it(server: Server, tmp_path: Path) -> None:
    client = MlflowClient(server.url)
    experiment = client.create_experiment("outage")
    run = RunHandle(client, client.create_run(experiment).info.run_id, experiment)
    background = BackgroundLog(run, retry_seconds=1.0, max_retry_seconds=2.0)
    for step in range(3):
        background.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    picture = tmp_path / "grid.png"
    picture.write_bytes(b"not really a png")
    time.sleep(2)
    server.stop()
    started = time.monotonic()
    for step in range(3, 6):
        background.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    background.log_artifact(picture, "samples")
    picture.unlink()  # the caller's file may go at once: the log keeps its own copy
    assert time.monotonic() - started < 1.0  # logging never waits for the server
    time.sleep(4)
    server.start()
    assert background.close(timeout=120)
    assert [m.step for m in client.get_metric_history(run.run_id, "loss")] == list(range(6))
    assert [a.path for a in client.list_artifacts(run.run_id, "samples")] == ["samples/grid.png"]


@pytest.mark.slow
def test_a_translator_keeps_training_through_an_outage(server: Server, tmp_path: Path) -> None:
    """``tanq train`` with its server stopped for a while mid-training finishes, with every epoch's metrics (2.5 min)."""
    from conftest import TINY_PHANTOM, ingest_tiny_phantom

    out = ingest_tiny_phantom(tmp_path / "data")
    epochs = 8
    command = [
        str(BIN / "tanq"), "train", "model=cyclegan", f"output_dir={out}", f"tracking.tracking_uri={server.url}",
        "tracking.experiment=outage", *TINY_PHANTOM, "models.cyclegan.ngf=8", "models.cyclegan.ndf=8",
        "models.cyclegan.n_blocks=2", f"models.cyclegan.epochs={epochs}", "train.batch_size=2", "train.num_workers=1",
        "train.visual_every=2",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=os.environ | FAIL_FAST, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(server.url)

    def epochs_logged() -> int:
        experiment = client.get_experiment_by_name("outage")
        runs = [] if experiment is None else client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
        return max((len(client.get_metric_history(r.info.run_id, "epoch_seconds")) for r in runs), default=0)

    deadline = time.monotonic() + 600
    while epochs_logged() < 2:
        assert process.poll() is None, process.stdout.read()[-3000:] if process.stdout else ""
        assert time.monotonic() < deadline, "training logged no epochs within 600 s"
        time.sleep(1)
    server.stop()
    time.sleep(20)  # epochs go on while nothing answers
    server.start()
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    # the training runs in a Ray task: its warning goes to the translator's log, in the folder the output names
    assert f"logs: {out / 'logs'}/" in output
    assert "MLflow is unreachable" in (out / "logs" / "train-cyclegan.log").read_text()
    assert epochs_logged() == epochs
