"""MLflow runs: parent per invocation, nested stage runs, params, artifacts, FAILED status."""

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tanq_ray.config import Config
from tanq_ray.stages.data import ingest_stage
from tanq_ray.tracking import Tracker, tracking_uri


def runs_by_stage(tracker: Tracker) -> dict[str, list]:
    found: dict[str, list] = {}
    for run in tracker.client.search_runs([tracker.experiment_id]):
        found.setdefault(run.data.tags["stage"], []).append(run)
    return found


def test_parent_and_stage_runs(tiny_config: Config, tmp_path: Path) -> None:
    tracker = Tracker(tiny_config)
    with tracker.invocation("ingest") as parent:
        with tracker.stage("ingest", parent, params=tiny_config.section_params("ingest")) as stage:
            stage.log_metrics({"volumes": 3}, step=0)
    runs = runs_by_stage(tracker)
    parent_run, stage_run = runs["invocation"][0], runs["ingest"][0]
    assert stage_run.data.tags["mlflow.parentRunId"] == parent_run.info.run_id
    assert parent_run.info.status == stage_run.info.status == "FINISHED"
    assert stage_run.data.params["ingest.image_size"] == "64"
    assert set(stage_run.data.params) == {k for k in parent_run.data.params if k.startswith("ingest.")}  # only what it reads
    assert parent_run.data.params.keys() == tiny_config.flat().keys()
    assert parent_run.data.tags["mlflow.source.name"] == "tanq ingest" and len(parent_run.data.tags["mlflow.source.git.commit"]) == 40
    assert tracker.client.get_experiment(tracker.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    local = tracker.client.download_artifacts(parent_run.info.run_id, "config.yaml", str(tmp_path))
    assert yaml.safe_load(Path(local).read_text())["ingest"]["image_size"] == 64


def test_failed_stage_marks_runs_failed(tiny_config: Config) -> None:
    tracker = Tracker(tiny_config)
    with pytest.raises(RuntimeError, match="boom"):
        with tracker.invocation("ingest") as parent:
            with tracker.stage("ingest", parent):
                raise RuntimeError("boom")
    runs = runs_by_stage(tracker)
    assert runs["ingest"][0].info.status == "FAILED"
    assert runs["ingest"][0].data.tags["error"] == "RuntimeError: boom"
    assert runs["invocation"][0].info.status == "FAILED"


def test_a_stopped_invocation_kills_every_open_run_under_it(tiny_config: Config) -> None:
    """Runs other processes opened (Ray workers) and another lane's stage end KILLED; unrelated runs stay."""
    tracker = Tracker(tiny_config)
    client, experiment = tracker.client, tracker.experiment_id
    unrelated = client.create_run(experiment, run_name="another command").info.run_id
    with pytest.raises(KeyboardInterrupt):
        with tracker.invocation("pipeline") as parent:
            lane = client.create_run(experiment, run_name="lane", tags={"mlflow.parentRunId": parent.run_id})
            worker = client.create_run(experiment, run_name="fold", tags={"mlflow.parentRunId": lane.info.run_id})
            with tracker.stage("train", parent) as stage:
                client.create_run(experiment, run_name="worker", tags={"mlflow.parentRunId": stage.run_id})
                raise KeyboardInterrupt
    statuses = {run.info.run_name: run.info.status for run in client.search_runs([experiment])}
    assert statuses == {
        "pipeline": "KILLED", "train": "KILLED", "worker": "KILLED", "lane": "KILLED", "fold": "KILLED",
        "another command": "RUNNING",
    }  # fmt: skip
    assert client.get_run(worker.info.run_id).info.status == "KILLED"
    assert client.get_run(unrelated).info.status == "RUNNING"


def test_default_uri_is_sqlite_in_working_directory(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(Config()) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(Config()) == "http://127.0.0.1:5000"


def test_a_relative_sqlite_uri_is_anchored_in_the_working_directory(monkeypatch, tmp_path: Path) -> None:
    """Ray workers run elsewhere; a relative path would open another database there."""
    monkeypatch.chdir(tmp_path)
    relative = Config.model_validate({"tracking": {"tracking_uri": "sqlite:///runs/a.db"}})
    assert tracking_uri(relative) == f"sqlite:///{tmp_path / 'runs' / 'a.db'}"
    absolute = Config.model_validate({"tracking": {"tracking_uri": "sqlite:////data/a.db"}})
    assert tracking_uri(absolute) == "sqlite:////data/a.db"


def test_ingest_stage_logs_counts_timings_and_sample_grid(ray_local, make_cohort, tiny_config: Config) -> None:
    config = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(update={"train_dir": make_cohort(2, 1)})})
    tracker = Tracker(config)
    with tracker.invocation("ingest") as parent:
        ingest_stage(config, tracker, parent)
    stage = runs_by_stage(tracker)["ingest"][0]
    metrics = stage.data.metrics
    assert metrics["volumes_ceT1"] == 2 and metrics["volumes_hrT2"] == 1 and metrics["volumes_skipped"] == 0
    assert metrics["slices_per_second"] > 0 and metrics["seconds"] > 0
    artifacts = {a.path for a in MlflowClient(tracker.uri).list_artifacts(stage.info.run_id)}
    assert {"sample_slices.png", "manifest.json"} <= artifacts


def test_a_run_reference_travels_as_data_and_opens_children(tiny_config: Config) -> None:
    import pickle

    from tanq_ray.run_ref import RunRef

    tracker = Tracker(tiny_config)
    with tracker.invocation("segment") as parent:
        ref = pickle.loads(pickle.dumps(RunRef.of(parent, tracker.uri)))  # what a Ray task receives
        child = ref.child("round_0 fold 2d/all", {"stage": "fold"}, {"epochs": 3})
        child.handle().log_metrics({"pseudo_dice": 0.5}, step=1)
        child.end("FAILED", error="RuntimeError: boom")
    run = tracker.client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id and run.data.params == {"epochs": "3"}
    assert run.info.status == "FAILED" and run.data.tags["error"] == "RuntimeError: boom"
    assert run.data.metrics == {"pseudo_dice": 0.5}
