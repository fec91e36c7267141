"""The `tanq` command end to end: phantom, ingest on the phantom, runs, bench smoke test."""

import json
from pathlib import Path

import pytest

from tanq_ray.cli import main


def test_phantom_then_ingest_then_runs(ray_local, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = tmp_path / "cohort"
    assert main(["phantom", "--out", str(cohort), "--cases", "2", "--eval-cases", "1", "--size", "64"]) == 0
    assert len(list((cohort / "train").glob("*_ceT1.nii.gz"))) == 2
    assert len(list((cohort / "eval_labels").glob("*_Label.nii.gz"))) == 1

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    args = ["ingest", f"output_dir={out}", f"data.train_dir={cohort / 'train'}", "ingest.image_size=32", f"tracking.tracking_uri={db}"]
    assert main(args) == 0
    manifest = json.loads((out / "ingest" / "manifest.json").read_text())
    assert manifest["counts"]["volumes_ceT1"] == 2 and manifest["counts"]["volumes_hrT2"] == 2
    assert "MLflow run" in capsys.readouterr().out

    assert main(["runs", f"tracking.tracking_uri={db}"]) == 0
    listing = capsys.readouterr().out
    assert "| ingest |" in listing and "| invocation |" in listing and "FINISHED" in listing


def test_ingest_without_train_dir_generates_the_phantom(ray_local, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "ingest", f"output_dir={out}", "phantom.cases=1", "phantom.eval_cases=0", "phantom.size=64",
        "ingest.image_size=32", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    assert main(args) == 0
    assert (out / "phantom" / "train").is_dir() and (out / "ingest" / "manifest.json").is_file()


def test_layout_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "scan.nii.gz").write_bytes(b"")
    args = ["ingest", f"output_dir={tmp_path / 'out'}", f"data.train_dir={tmp_path / 'train'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    assert main(args) == 2
    assert "scan.nii.gz" in capsys.readouterr().err


def test_bench_data_quick_prints_its_table(ray_local, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "data", "--quick", "--json", str(tmp_path / "data.json")]) == 0
    names = [f["name"] for f in json.loads((tmp_path / "data.json").read_text())["figures"]]
    assert "Ray Data shards -> torch batches, image" in names and "PNG folder + DataLoader (2 workers)" in names
    assert "| figure | value |" in capsys.readouterr().out
