"""A real two-node Ray cluster (`ray start`), jobs through `ray job submit`, runs on a real `mlflow server`.

Everything listens on 127.0.0.1 and is torn down at the end: the cluster's
processes are found by its own temp dir, so the test session's other Ray
instance is left alone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXCLUDES = json.dumps({"excludes": [".venv/", "runs/", "mlruns/", "*.db", ".git/", ".pytest_cache/"]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float) -> None:
    """Until ``url`` answers at all (an HTTP error such as 401 without a token counts as an answer)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")


def kill_cluster_processes(temp: Path) -> None:
    """SIGKILL every process that has a file open under the cluster's temp dir (its logs, sockets)
    or names it on its command line: all that the cluster started, and nothing else."""
    marker = str(temp)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            uses = marker.encode() in (entry / "cmdline").read_bytes() or any(
                os.readlink(fd).startswith(marker) for fd in (entry / "fd").iterdir()
            )
            if uses:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


class Cluster:
    """Head + one worker node with its own custom resource, an MLflow server, and a shared output folder."""

    def __init__(self, backend_store_uri: str | None = None) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="tq-ray-", dir="/tmp"))  # short: Ray's socket paths are limited
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.temp / 'mlflow.db'}"
        self.gcs, self.dashboard_port, mlflow_port = free_port(), free_port(), free_port()
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.mlflow = f"http://127.0.0.1:{mlflow_port}"
        self.env = os.environ | {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.mlflow_server: subprocess.Popen | None = None

    def ray(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        deadline = time.monotonic() + 90
        while True:
            done = subprocess.run(["ray", *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
            # the job agent of a fresh node comes up some seconds after the dashboard
            if "No available agent" not in done.stderr or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert done.returncode == 0, f"ray {' '.join(args[:3])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def start(self) -> None:
        self.ray(
            "start", "--head", f"--temp-dir={self.temp}", "--node-ip-address=127.0.0.1", f"--port={self.gcs}",
            "--num-cpus=1", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}",
        )  # fmt: skip
        self.ray(  # a second node on the same host needs its own agent port
            "start", f"--address=127.0.0.1:{self.gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
            '--resources={"second_node": 1}', f"--dashboard-agent-listen-port={free_port()}",
        )  # fmt: skip
        self.mlflow_server = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", self.mlflow.rsplit(":", 1)[1],
             "--backend-store-uri", self.backend_store_uri, "--artifacts-destination", str(self.temp / "artifacts")],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_for(f"{self.mlflow}/health", 180)
        wait_for(f"{self.dashboard}/api/version", 60)

    def stop(self) -> None:
        if self.mlflow_server is not None:
            os.killpg(self.mlflow_server.pid, signal.SIGKILL)
        kill_cluster_processes(self.temp)
        shutil.rmtree(self.temp, ignore_errors=True)

    def submit(self, script: str, *args: str, wait: bool = True, submission_id: str | None = None) -> subprocess.CompletedProcess:
        options = ["--no-wait", f"--submission-id={submission_id}"] if not wait else []
        return self.ray(
            "job", "submit", f"--address={self.dashboard}", *options, "--working-dir", ".", "--runtime-env-json", EXCLUDES,
            "--", "python", script, *args,
        )  # fmt: skip

    def job_status(self, submission_id: str) -> str:
        """``SUCCEEDED``, ``FAILED``, ``RUNNING``, ... as ``ray job status`` reports it."""
        done = self.ray("job", "status", f"--address={self.dashboard}", submission_id)
        for state in ("SUCCEEDED", "FAILED", "STOPPED", "RUNNING", "PENDING"):
            if state.lower() in (done.stdout + done.stderr).lower():
                return state
        return "UNKNOWN"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    running = Cluster()
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.mark.slow  # 1.5 minutes: `make test` stays under 20 minutes on 2 cores
def test_jobs_on_a_two_node_cluster_log_to_an_mlflow_server(cluster: Cluster) -> None:
    status = cluster.ray("status", f"--address=127.0.0.1:{cluster.gcs}").stdout
    assert status.count("node_") == 2 and "second_node" in status

    out = cluster.temp / "out"  # one folder both nodes see: storage_path and shards
    common = [
        "--config", "configs/tiny.yaml", f"output_dir={out}", f"tracking.tracking_uri={cluster.mlflow}",
        "phantom.cases=2", "phantom.eval_cases=0", "ingest.image_size=32",
    ]  # fmt: skip; the training job finds the shards finished with the same settings
    ingest = cluster.submit("jobs/ingest.py", *common)
    assert "succeeded" in ingest.stdout + ingest.stderr

    tiny = ["models.cyclegan.ngf=8", "models.cyclegan.ndf=8", "models.cyclegan.n_blocks=2", "models.cyclegan.epochs=2"]
    workers = ["train.num_workers=2", "train.cpus_per_worker=0.5", "train.batch_size=2"]
    cluster.submit("jobs/train.py", *common, "model=cyclegan", *tiny, *workers, wait=False, submission_id="tiny-train")
    deadline = time.monotonic() + 240
    while (status := cluster.job_status("tiny-train")) != "SUCCEEDED":
        if status in ("FAILED", "STOPPED") or time.monotonic() > deadline:
            logs = cluster.ray("job", "logs", f"--address={cluster.dashboard}", "tiny-train").stdout
            pytest.fail(f"training job {status}:\n{logs[-4000:]}")
        time.sleep(3)

    assert list((out / "train" / "ray" / "cyclegan").glob("checkpoint_*"))
    assert (out / "train" / "cyclegan" / "generator.pt").is_file()
    client = MlflowClient(cluster.mlflow)
    experiment = client.get_experiment_by_name("tanq-ray-tiny")
    runs = {r.data.tags["stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert {"invocation", "phantom", "ingest", "train"} <= set(runs)
    train = runs["train"]
    assert train.info.status == "FINISHED" and train.data.tags["model"] == "cyclegan"
    assert [m.step for m in client.get_metric_history(train.info.run_id, "loss_cycle_A")] == [0, 1]
    assert {a.path for a in client.list_artifacts(train.info.run_id)} >= {"model", "images"}
