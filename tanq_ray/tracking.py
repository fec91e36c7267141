"""MLflow tracking: one parent run per invocation, one nested run per stage.

Every run carries the tag ``stage`` (``invocation`` for the parent). The
parent logs the whole flattened config as params and stores it as
``config.yaml``; a stage run logs only the sections it reads
(:meth:`~tanq_ray.config.Config.section_params`), so the MLflow UI's compare
view of two stage runs shows exactly the settings that differ. The parent
also carries the source tags (entry point, git commit when the package is a
checkout), and the experiment is marked as model training
(``mlflow.experimentKind``), so the UI opens it on runs, not on GenAI traces.
A run whose body raises is marked FAILED (KILLED on Ctrl-C or SIGTERM: the
CLI turns SIGTERM into :class:`KeyboardInterrupt`, and a local Ray node's own
SIGTERM handler exits with :class:`SystemExit`) and the error is re-raised;
when an invocation stops, every run under it still RUNNING (another lane's
stage, runs that Ray workers opened) is marked KILLED too.

The tracking URI comes from ``tracking.tracking_uri``, else
``$MLFLOW_TRACKING_URI``, else a SQLite file ``mlflow.db`` in the working
directory, so nothing has to be started. All calls go through an explicit
:class:`mlflow.MlflowClient` and run ids, never the process-global active
run, so the same handle works in a Ray task or a Ray Train worker.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException

from tanq_ray.config import Config, dump_config

MAX_BATCH = 100  # MLflow's limit on params per log_batch call
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""The MLflow 3 UI opens an experiment without this tag as a GenAI one (traces, evaluations)."""


def tracking_uri(config: Config) -> str:
    """The MLflow tracking URI: config, then ``$MLFLOW_TRACKING_URI``, then ``sqlite:///mlflow.db`` in the cwd.

    A relative SQLite path is made absolute here: Ray workers run in other
    folders and would otherwise open (and create) another database.
    """
    uri = config.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/") and uri != prefix + ":memory:":
        return prefix + str(Path.cwd() / uri[len(prefix) :])
    return uri


@dataclass(frozen=True)
class RunHandle:
    """A live MLflow run that any process can log to."""

    client: MlflowClient
    run_id: str
    experiment_id: str = ""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        for start in range(0, len(batch), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=batch[start : start + MAX_BATCH])

    def log_params(self, params: Mapping[str, Any]) -> None:
        batch = [Param(key, _param_text(value)) for key, value in params.items()]
        for start in range(0, len(batch), MAX_BATCH):
            self.client.log_batch(self.run_id, params=batch[start : start + MAX_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_image(self, pixels: Any, key: str, step: int) -> None:
        """An ``(H, W, 3)`` uint8 picture in MLflow's image history: same ``key`` in every run, one entry per ``step``.

        The newest picture of each key is also the run's top-level ``<key>.png``:
        MLflow's compare view lists only top-level files that both runs have, and
        shows them side by side.
        """
        self.client.log_image(self.run_id, pixels, key=key, step=step, synchronous=True)
        self.client.log_image(self.run_id, pixels, artifact_file=f"{key}.png")


def _param_text(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def source_tags(command: str) -> dict[str, str]:
    """MLflow's source tags of a command: its entry point, and the git commit when the package is a git checkout."""
    tags = {"mlflow.source.name": f"tanq {command}", "mlflow.source.type": "LOCAL", "tanq.version": _version()}
    commit = _git_commit(Path(__file__).resolve().parents[1])
    if commit is not None:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tanq-ray")
    except PackageNotFoundError:
        return "unknown"


def _git_commit(folder: Path) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


class Tracker:
    """Creates the experiment and the runs of one invocation."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.uri = tracking_uri(config)
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(config.tracking.experiment)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(config.tracking.experiment, tags=EXPERIMENT_KIND)
        else:
            self.experiment_id = experiment.experiment_id
            if not set(EXPERIMENT_KIND.items()) <= set(experiment.tags.items()):
                for key, value in EXPERIMENT_KIND.items():
                    self.client.set_experiment_tag(self.experiment_id, key, value)

    @contextmanager
    def invocation(self, name: str, tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None) -> Iterator[RunHandle]:
        """The parent run of one command (``tanq ingest``, ``tanq pipeline``, ...); ``resume_run_id`` reopens an earlier one."""
        tags = {"stage": "invocation", "command": name, **source_tags(name), **(tags or {})}
        with self._run(name, tags, resume_run_id, self.config.flat()) as run:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "config.yaml"
                path.write_text(dump_config(self.config))
                run.log_artifact(path)
            try:
                yield run
            except BaseException:
                self._kill_open_descendants(run.run_id)
                raise

    def _kill_open_descendants(self, root_run_id: str) -> None:
        """Mark KILLED every run under ``root_run_id`` still RUNNING: its process was stopped with the invocation.

        Stage runs of another lane, and translator and fold runs that Ray workers
        opened, never reach their own end when the driver stops.
        """
        running = self.client.search_runs(
            [self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000
        )
        parent_of: dict[str, str | None] = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in running}

        def parent(run_id: str) -> str | None:  # ancestors that already ended are looked up once
            if run_id not in parent_of:
                parent_of[run_id] = self.client.get_run(run_id).data.tags.get("mlflow.parentRunId")
            return parent_of[run_id]

        for run in running:
            ancestor = parent(run.info.run_id)
            while ancestor is not None and ancestor != root_run_id:
                ancestor = parent(ancestor)
            if ancestor == root_run_id:
                self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))

    @contextmanager
    def stage(
        self,
        stage: str,
        parent: RunHandle,
        tags: Mapping[str, Any] | None = None,
        name: str | None = None,
        resume_run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[RunHandle]:
        """A run nested under ``parent`` with tag ``stage`` (and any extra tags) and ``params`` (the config sections it reads).

        ``resume_run_id`` reopens an earlier run.
        """
        tags = {"stage": stage, "mlflow.parentRunId": parent.run_id, **(tags or {})}
        with self._run(name or stage, tags, resume_run_id, params or {}) as run:
            yield run

    @contextmanager
    def _run(self, name: str, tags: Mapping[str, Any], resume_run_id: str | None, params: Mapping[str, Any]) -> Iterator[RunHandle]:
        if resume_run_id is not None and self._reopen(resume_run_id):
            run = RunHandle(self.client, resume_run_id, self.experiment_id)
        else:
            created = self.client.create_run(self.experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
            run = RunHandle(self.client, created.info.run_id, self.experiment_id)
            run.log_params(params)
        try:
            yield run
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM (ours, or the local Ray node's sys.exit)
            self.client.set_terminated(run.run_id, RunStatus.to_string(RunStatus.KILLED))
            raise
        except BaseException as err:
            run.set_tags({"error": f"{type(err).__name__}: {err}"[:5000]})
            self.client.set_terminated(run.run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.client.set_terminated(run.run_id, RunStatus.to_string(RunStatus.FINISHED))

    def _reopen(self, run_id: str) -> bool:
        """Mark an earlier run of this experiment RUNNING again; False when it no longer exists here."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        if run.info.experiment_id != self.experiment_id or run.info.lifecycle_stage != "active":
            return False
        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        return True

    def ui_hint(self) -> str:
        """The command that opens this tracking store in the MLflow UI."""
        if self.uri.startswith(("http://", "https://")):
            return f"open {self.uri}"
        return f"mlflow ui --backend-store-uri {self.uri}"
