"""The pipeline's first stages on a two-node ``ray start`` cluster, the way deploy/ runs them, with MLflow on PostgreSQL.

What the deployment relies on, on one machine: the Ray nodes get
``MLFLOW_TRACKING_URI`` from their environment (as pods get it from the
tanq-tracking ConfigMap), jobs run in the repository where ``ray start`` ran
(as in the image, whose working directory is the repository) without a
working-dir upload, every stage writes under one output folder that both
nodes see, and the MLflow server keeps its runs in a real PostgreSQL. The
database is a throwaway cluster (``initdb`` in a temp dir, 127.0.0.1 on a
free port, password authentication); the test is skipped, with the reason,
where the PostgreSQL server binaries or the psycopg driver are missing.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from mlflow import MlflowClient

from test_cluster import Cluster, free_port

POSTGRES_TOOLS = ("initdb", "pg_ctl", "createdb")
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")  # where Debian's postgresql-<version> packages put the server


def postgres_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and createdb: from PATH, else the newest Debian install."""
    on_path = [shutil.which(tool) for tool in POSTGRES_TOOLS]
    if all(on_path):
        return Path(on_path[0]).resolve().parent
    installed = [folder for folder in DEBIAN_POSTGRES.glob("*/bin") if folder.parent.name.isdigit()]
    complete = [folder for folder in installed if all((folder / tool).is_file() for tool in POSTGRES_TOOLS)]
    return max(complete, key=lambda folder: int(folder.parent.name), default=None)


class ThrowawayPostgres:
    """A PostgreSQL server in a temp dir, on 127.0.0.1 only, with a database ``mlflow`` owned by a password user ``mlflow``.

    PostgreSQL refuses to run as root, so under root the server runs as the
    ``postgres`` account when there is one, else as ``nobody``.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="tq-pg-", dir="/tmp"))  # short: the socket path is limited
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.account = self._account()

    @staticmethod
    def _account() -> str | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                return pwd.getpwnam(name).pw_name
            except KeyError:
                continue
        raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL")

    @property
    def uri(self) -> str:
        """SQLAlchemy URI for MLflow's ``--backend-store-uri`` (psycopg 3 driver)."""
        return f"postgresql+psycopg://mlflow:{self.password}@127.0.0.1:{self.port}/mlflow"

    def _run(self, tool: str, *args: str) -> None:
        env = os.environ | {"PGPASSWORD": self.password}
        done = subprocess.run([str(self.bin / tool), *args], user=self.account, env=env, cwd=self.root,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, f"{tool} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"

    def start(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self.account is not None:  # the server's folder belongs to the account it runs as
            account = pwd.getpwnam(self.account)
            for path in (self.root, password_file):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", "data", "-U", "mlflow", f"--pwfile={password_file}", "--auth=scram-sha-256", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        server_options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", "data", "-l", "server.log", "-w", "-t", "60", "-o", server_options, "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow", "mlflow")

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            subprocess.run([str(self.bin / "pg_ctl"), "-D", "data", "-m", "immediate", "stop"],
                           user=self.account, cwd=self.root, capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresTrackedCluster(Cluster):
    """tests/test_cluster.py's two-node cluster, with its MLflow server on PostgreSQL and the URI in the nodes' environment."""

    def __init__(self, backend_store_uri: str) -> None:
        super().__init__(backend_store_uri)
        self.env["MLFLOW_TRACKING_URI"] = self.mlflow  # every Ray process inherits it, as from a ConfigMap

    def run_in_place(self, script: str, *args: str) -> str:
        """``ray job submit`` without a working dir: the job runs where ``ray start`` ran (the repository)."""
        done = self.ray("job", "submit", f"--address={self.dashboard}", "--", "python", script, *args)
        return done.stdout + done.stderr


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, createdb); on Debian: apt-get install postgresql")
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("MLflow needs the psycopg driver to use PostgreSQL: pip install 'psycopg[binary]'")
    server = ThrowawayPostgres(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(postgres: ThrowawayPostgres) -> Iterator[PostgresTrackedCluster]:
    running = PostgresTrackedCluster(postgres.uri)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_ingest_and_training_jobs_share_storage_and_log_to_mlflow_on_postgresql(
    cluster: PostgresTrackedCluster, postgres: ThrowawayPostgres
) -> None:
    status = cluster.ray("status", f"--address=127.0.0.1:{cluster.gcs}").stdout
    assert status.count("node_") == 2

    shared = cluster.temp / "shared"  # the one output folder both nodes use: shards, Ray Train storage, generator
    # no tracking URI: it comes from the environment; the training job finds the shards finished with the same settings
    common = ["--config", "configs/tiny.yaml", f"output_dir={shared}", "phantom.cases=2", "phantom.eval_cases=0", "ingest.image_size=32"]
    ingest = cluster.run_in_place("jobs/ingest.py", *common)
    assert "succeeded" in ingest.lower()
    train = cluster.run_in_place(
        "jobs/train.py", *common, "model=tanq", "models.tanq.epochs=1", "train.num_workers=1", "train.cpus_per_worker=1"
    )
    assert "succeeded" in train.lower()

    assert (shared / "ingest" / "manifest.json").is_file()
    assert list((shared / "train" / "ray" / "tanq").glob("checkpoint_*"))
    assert (shared / "train" / "tanq" / "generator.pt").is_file()

    client = MlflowClient(cluster.mlflow)
    experiment = client.get_experiment_by_name("tanq-ray-tiny")
    runs = {r.data.tags["stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert {"invocation", "phantom", "ingest", "train"} <= set(runs)
    trained = runs["train"]
    assert trained.info.status == "FINISHED" and trained.data.tags["model"] == "tanq"
    losses = [key for key in trained.data.metrics if key.startswith("loss_")]
    assert losses and [m.step for m in client.get_metric_history(trained.info.run_id, losses[0])] == [0]
    assert "model" in {a.path for a in client.list_artifacts(trained.info.run_id)}
    assert any((cluster.temp / "artifacts").rglob("*")), "artifacts went through the server to its destination"

    import psycopg

    login = {"host": "127.0.0.1", "port": postgres.port, "user": "mlflow", "password": postgres.password, "dbname": "mlflow"}
    with psycopg.connect(**login) as db:
        stages = {value for (value,) in db.execute("select value from tags where key = 'stage'")}
        metric_rows = db.execute("select count(*) from metrics where run_uuid = %s", (trained.info.run_id,)).fetchone()[0]
    assert {"invocation", "ingest", "train"} <= stages, "the runs are in PostgreSQL, not in a fallback store"
    assert metric_rows > 0
