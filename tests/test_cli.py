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
    ingest_row = next(line for line in listing.splitlines() if "| ingest |" in line)
    assert "volumes_ceT1=2, volumes_hrT2=2, seconds=" in ingest_row  # headline metrics, not the alphabetical first


def test_runs_lists_dice_first_and_keeps_nan_visible() -> None:
    from tanq_ray.runs import headline

    row = {"assd_cochlea": float("nan"), "assd_vs": 3.2, "dice_cochlea": 0.5, "dice_vs": 0.7, "dice_mean": 0.6, "n_cases": 4}
    assert headline(row) == "dice_vs=0.7, dice_cochlea=0.5, dice_mean=0.6, assd_vs=3.2"
    assert headline({"b": 1.0, "a": float("nan"), "seconds": 2.0}) == "seconds=2, a=nan, b=1"


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


def test_a_missing_data_folder_stops_before_mlflow_or_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["pipeline", "--config", "configs/tiny.yaml", f"output_dir={tmp_path / 'out'}",
            f"data.eval_dir={tmp_path / 'nowhere'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    assert main(args) == 2
    assert f"data.eval_dir: folder '{tmp_path / 'nowhere'}' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out" / "logs").exists()


def test_without_a_config_file_the_paper_settings_are_announced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["train", f"output_dir={tmp_path}", db, "model=cyclegan"]) == 2  # nothing ingested: stops at once
    err = capsys.readouterr().err
    assert "no --config: using the paper's settings" in err and "configs/tiny.yaml" in err
    assert main(["train", "--config", "configs/tiny.yaml", f"output_dir={tmp_path}", db, "model=cyclegan"]) == 2
    assert "no --config" not in capsys.readouterr().err
    assert main(["runs", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    assert "no --config" not in capsys.readouterr().err  # only commands that start work say it


def test_every_subcommand_has_a_description_and_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("phantom", "ingest", "train", "sweep", "translate", "segment", "pipeline", "study", "evaluate", "runs", "bench"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert f"tanq {command}:" in text and "example:\n  tanq " + command in text, text
    with pytest.raises(SystemExit):
        main(["--help"])
    overview = capsys.readouterr().out
    assert "``" not in overview and "quick start" in overview


def test_every_stage_command_has_a_ray_job_entrypoint() -> None:
    from tanq_ray.cli import WRITES_OUTPUT_DIR

    jobs = Path(__file__).resolve().parents[1] / "jobs"
    for command in WRITES_OUTPUT_DIR:
        assert f'main(["{command}", *sys.argv[1:]])' in (jobs / f"{command}.py").read_text(), command
