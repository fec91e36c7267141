"""The whole recipe on a tiny phantom: a scored table, then stage caching on re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tanq_ray.config import Config, load_config
from tanq_ray.pipeline import run_pipeline, stage_names

TINY = [
    "phantom.cases=2", "phantom.eval_cases=2", "phantom.size=64", "ingest.image_size=32",
    "models.tanq.ngf=8", "models.tanq.ndf=8", "models.tanq.n_blocks=2", "models.tanq.nce_layers=[0,4,8,12,13]",
    "models.tanq.num_patches=32", "models.cyclegan.ngf=8", "models.cyclegan.ndf=8", "models.cyclegan.n_blocks=2",
    "models.tanq.epochs=1", "models.cyclegan.epochs=1", "train.batch_size=2", "train.cpus_per_worker=0.5", "train.crop_size=24",
    "train.visual_every=100", "segment.configurations=[2d]", "segment.folds=2", "segment.epochs=1",
    "segment.iterations_per_epoch=2", "segment.batch_size=2", "segment.self_training_rounds=1",
    "segment.test_time_mirroring=false",
]  # fmt: skip


def _config(root: Path, *overrides: str) -> Config:
    return load_config(
        None, [f"output_dir={root / 'out'}", f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}", "tracking.experiment=pipe", *TINY, *overrides]
    )


def _states(result) -> dict[str, str]:
    return {row["stage"]: row["state"] for row in result.stages.rows}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, ray_local):
    root = tmp_path_factory.mktemp("pipeline")
    return root, run_pipeline(_config(root))


def test_the_tiny_pipeline_produces_a_scored_table_per_round(first_run) -> None:
    root, result = first_run
    config = _config(root)
    assert set(_states(result).values()) == {"done"} and list(_states(result)) == stage_names(config)
    summary = json.loads((result.evaluation_dir / "summary.json").read_text())
    assert summary["n_cases"] == 2 and 0.0 <= summary["dice_vs"] <= 1.0
    table = [line.split(",")[0] for line in (result.evaluation_dir / "results.csv").read_text().splitlines()[1:]]
    assert table == ["source-only", "multi-view (no self-training)", "self-training round 1", "target-supervised"]
    assert "gap closed" in result.table_markdown and "p (Dice mean vs source-only)" in result.table_markdown
    assert {p.name for p in result.evaluation_dir.glob("predictions_*.png")} == {
        f"predictions_{case}.png" for case in json.loads((config.stage_dir("phantom") / "cohort.json").read_text())["eval_case_ids"]
    }
    assert (config.stage_dir("translate") / "translation.png").is_file()
    for view in ("tanq", "cyclegan"):
        assert len(list((config.stage_dir("translate") / view).glob("*_hrT2.nii.gz"))) == 2
    assert len(list((config.stage_dir("segment") / "round_1" / "pseudo_labels").glob("*.nii.gz"))) == 2

    client = MlflowClient(config.tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("pipe").experiment_id])
    segment_runs = [r for r in runs if r.data.tags.get("stage") == "segment"]
    rounds = {r.data.tags["round"]: r for r in segment_runs if "round" in r.data.tags}
    assert set(rounds) == {"0", "1"} and all("dice_vs" in r.data.metrics for r in segment_runs)
    assert {r.data.tags["row"] for r in segment_runs} == set(table)
    for row in ("source-only", "target-supervised"):  # each reference row is its own nnUNet, on its own data
        dataset = next((config.stage_dir("segment") / row / "nnUNet_raw").iterdir()) / "dataset.json"
        sources = json.loads(dataset.read_text())["tanq_sources"]
        assert len(sources) == 2 and all(("ceT1" in s["image"][0]) == (row == "source-only") for s in sources.values())
    folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == rounds["0"].info.run_id]
    assert len(folds) == 2


def test_rerunning_trains_nothing_and_changing_pseudo_labels_reruns_only_self_training(first_run) -> None:
    root, _ = first_run
    again = run_pipeline(_config(root))
    assert set(_states(again).values()) == {"cached"}
    changed = _states(run_pipeline(_config(root, "segment.refine_pseudo_labels=true")))
    untouched = ("ingest", "train-tanq", "train-cyclegan", "translate", "segment-round-0", "segment-source-only", "segment-target-supervised")
    assert {name: changed[name] for name in untouched} == dict.fromkeys(untouched, "cached")
    assert {changed[name] for name in ("segment-round-1", "evaluate")} == {"done"}
    config = _config(root)
    assert len(list((config.stage_dir("segment") / "round_1" / "pseudo_labels" / "roi").glob("*.nii.gz"))) == 2  # refined
