"""The whole recipe on a tiny phantom through ``tanq pipeline``: a quiet console, a scored table, then stage caching."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
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


REPO = Path(__file__).resolve().parents[1]
CONSOLE_LINES = 60
"""A quiet console: a line per stage change, a progress line a minute, the two tables and where to look."""
RAY_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [IWEF] \d+ \d+\] ", re.MULTILINE)
"""A line of Ray's C++ log (``[2026-11-29 01:55:53,197 E 6692 9628] core_worker.cc:2465: ...``) on the console."""


def _overrides(root: Path, *extra: str) -> list[str]:
    return [f"output_dir={root / 'out'}", f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}", "tracking.experiment=pipe", *TINY, *extra]


def _config(root: Path, *overrides: str) -> Config:
    return load_config(None, _overrides(root, *overrides))


def _states(result) -> dict[str, str]:
    return {row["stage"]: row["state"] for row in result.stages.rows}


@dataclass(frozen=True)
class ConsoleRun:
    """What ``tanq pipeline`` printed (stdout, stderr) and what it left."""

    stdout: str
    stderr: str
    evaluation_dir: Path

    @property
    def stage_states(self) -> dict[str, str]:
        """The stage table of stdout, ``| ingest | done | 13.9 |`` -> ``{"ingest": "done"}``."""
        cells = [line.strip("|").split("|") for line in self.stdout.splitlines() if line.startswith("| ")]
        return {c[0].strip(): c[1].strip() for c in cells if len(c) == 3 and c[0].strip() != "stage"}


def _tanq(*args: str) -> subprocess.CompletedProcess:
    """The CLI in its own process, as a user runs it (its own local Ray), output captured as in a log file."""
    done = subprocess.run([sys.executable, "-m", "tanq_ray.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, ray_local):
    """The README's sequence: ``tanq ingest``, ``tanq train model=tanq``, then ``tanq pipeline``; returns the pipeline's console."""
    root = tmp_path_factory.mktemp("pipeline")
    _tanq("ingest", *_overrides(root))
    _tanq("train", *_overrides(root), "model=tanq")
    generator = _config(root).stage_dir("train") / "tanq" / "generator.pt"
    trained = generator.stat().st_mtime_ns
    done = _tanq("pipeline", *_overrides(root))
    assert generator.stat().st_mtime_ns == trained  # the pipeline adopted what `tanq train` left
    return root, ConsoleRun(done.stdout, done.stderr, _config(root).stage_dir("evaluation"))


def test_a_successful_run_is_quiet_and_says_where_to_look(first_run) -> None:
    root, result = first_run
    console = result.stdout + result.stderr
    lines = console.splitlines()
    assert "Traceback" not in console and "leak" not in console.lower() and "warn" not in console.lower(), console
    assert len(lines) <= CONSOLE_LINES, console
    assert "(pid=" not in console  # no Ray worker output streamed to the driver
    assert not RAY_LOG_LINE.search(console), console  # e.g. Ray Data's actor-restart error (tanq_ray.translate)
    logs = _config(root).output_dir / "logs"
    assert f"logs: {logs}/" in result.stdout and "mlflow ui --backend-store-uri sqlite:///" in result.stdout
    written = {p.name for p in logs.glob("*.log")}
    assert {"tanq.log", "train-tanq.log", "train-cyclegan.log", "nnunet_round_0_2d-0.log"} <= written, written
    assert "epoch" in (logs / "train-tanq.log").read_text()
    assert "evaluate: done" in result.stderr  # plain progress lines when the console is not a terminal


def test_the_tiny_pipeline_produces_a_scored_table_per_round(first_run) -> None:
    root, result = first_run
    config = _config(root)
    assert list(result.stage_states) == stage_names(config)
    adopted = {"ingest": "cached", "train-tanq": "cached"}  # finished by `tanq ingest` and `tanq train`
    assert result.stage_states == adopted | {name: "done" for name in stage_names(config) if name not in adopted}
    summary = json.loads((result.evaluation_dir / "summary.json").read_text())
    assert summary["n_cases"] == 2 and 0.0 <= summary["dice_vs"] <= 1.0
    table = [line.split(",")[0] for line in (result.evaluation_dir / "results.csv").read_text().splitlines()[1:]]
    assert table == ["source-only", "multi-view (no self-training)", "self-training round 1", "target-supervised"]
    assert "gap closed" in result.stdout and "p (Dice mean vs source-only)" in result.stdout
    assert {p.name for p in result.evaluation_dir.glob("predictions_*.png")} == {
        f"predictions_{case}.png" for case in json.loads((config.stage_dir("phantom") / "cohort.json").read_text())["eval_case_ids"]
    }
    assert (config.stage_dir("translate") / "translation.png").is_file()
    for view in ("tanq", "cyclegan"):
        assert len(list((config.stage_dir("translate") / view).glob("*_hrT2.nii.gz"))) == 2
    assert len(list((config.stage_dir("segment") / "round_1" / "pseudo_labels").glob("*.nii.gz"))) == 2

    client = MlflowClient(config.tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("pipe").experiment_id])
    translator_runs = [r for r in runs if r.data.tags.get("stage") == "train"]
    assert {r.data.tags["model"] for r in translator_runs} == {"tanq", "cyclegan"}
    for run in translator_runs:  # shared names, so the compare view of the two lines up
        assert {"loss_G", "loss_G_adv", "loss_D", "structure_score"} <= set(run.data.metrics), run.data.metrics
        assert all(k.startswith(("ingest.", "train.", f"models.{run.data.tags['model']}.")) for k in run.data.params)
    segment_runs = [r for r in runs if r.data.tags.get("stage") == "segment"]
    rounds = {r.data.tags["round"]: r for r in segment_runs if "round" in r.data.tags}
    assert set(rounds) == {"0", "1"} and all("dice_vs" in r.data.metrics for r in segment_runs)
    assert {r.data.tags["row"] for r in segment_runs} == set(table)
    for row in ("source-only", "target-supervised"):  # each reference row is its own nnUNet, on its own data
        dataset = next((config.stage_dir("segment") / row / "nnUNet_raw").iterdir()) / "dataset.json"
        sources = json.loads(dataset.read_text())["tanq_sources"]
        assert len(sources) == 2 and all(("ceT1" in s["image"][0]) == (row == "source-only") for s in sources.values())
    folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == rounds["0"].info.run_id]
    assert sorted(r.info.run_name for r in folds) == ["round_0 fold 2d/0", "round_0 fold 2d/1"]
    parent = next(r for r in runs if r.data.tags.get("stage") == "invocation")
    assert "dice_vs" in parent.data.metrics and "results.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_rerunning_trains_nothing_and_changing_pseudo_labels_reruns_only_self_training(first_run) -> None:
    root, _ = first_run
    again = run_pipeline(_config(root))
    assert set(_states(again).values()) == {"cached"}
    how_it_runs = [
        "segment.max_parallel_folds=1", "segment.fold_retries=0", "segment.augmentation_processes=1", "ingest.max_parallel=1",
        "ingest.on_bad_volume=stop", "train.checkpoint_every=3", "train.max_failures=0", "segment.dataset_id=502",
    ]  # fmt: skip
    assert set(_states(run_pipeline(_config(root, *how_it_runs))).values()) == {"cached"}
    refined = (  # the location rules read the translations' labels; nnUNet trains round 1 with an ignore label
        "segment.refine_pseudo_labels=true", "segment.refine_vs_location_mm=5", "segment.refine_one_cochlea_per_side=true",
        "segment.pseudo_label_vs_margin_mm=4",
    )  # fmt: skip
    changed = _states(run_pipeline(_config(root, *refined)))
    untouched = ("ingest", "train-tanq", "train-cyclegan", "translate", "segment-round-0", "segment-source-only", "segment-target-supervised")
    assert {name: changed[name] for name in untouched} == dict.fromkeys(untouched, "cached")
    assert {changed[name] for name in ("segment-round-1", "evaluate")} == {"done"}
    config = _config(root)
    pseudo_labels = config.stage_dir("segment") / "round_1" / "pseudo_labels"
    assert len(list((pseudo_labels / "roi").glob("*.nii.gz"))) == 2  # refined
    trained_on = sorted(p.name for p in (pseudo_labels / "training").glob("*.nii.gz"))  # the copies with a margin
    assert trained_on == sorted(p.name for p in (pseudo_labels / "roi").glob("*.nii.gz"))
    dataset = json.loads(next((config.stage_dir("segment") / "round_1" / "nnUNet_raw").glob("*/dataset.json")).read_text())
    assert dataset["labels"]["ignore"] == 3
