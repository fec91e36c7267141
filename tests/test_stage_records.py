"""Stage records: a stage clears only folders its record says we wrote; anything else is moved aside, never deleted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tanq_ray import stage_records
from tanq_ray.stage_records import records_dir
from tanq_ray.config import Config, load_config


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(None, [f"output_dir={tmp_path / 'out'}"])


def _work_dir(config: Config) -> Path:
    folder = config.stage_dir("train") / "tanq"
    folder.mkdir(parents=True)
    (folder / "generator.pt").write_bytes(b"weights")
    return folder


def test_files_no_record_names_are_moved_aside(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    folder = _work_dir(config)
    with caplog.at_level(logging.WARNING):
        stage_records.start(records_dir(config), "train-tanq", "key-a", [folder])
    [aside] = folder.parent.glob("tanq.unrecorded-*")
    assert (aside / "generator.pt").read_bytes() == b"weights" and not folder.exists()
    assert "moved to" in caplog.text and "nothing deleted" in caplog.text


def test_a_record_of_other_settings_clears_its_folder_and_the_same_settings_resume(config: Config) -> None:
    folder = _work_dir(config)
    stage_records.finish(records_dir(config), "train-tanq", "key-a", {"generator": str(folder / "generator.pt")}, 1.0)
    stage_records.start(records_dir(config), "train-tanq", "key-a", [folder])  # same settings: an interrupted run resumes
    assert (folder / "generator.pt").is_file()
    stage_records.start(records_dir(config), "train-tanq", "key-b", [folder])  # we wrote it, for other settings
    assert not folder.exists() and not list(folder.parent.glob("tanq.unrecorded-*"))
    assert stage_records.finished_outputs(records_dir(config), "train-tanq", "key-b") is None  # running, not finished
    stage_records.finish(records_dir(config), "train-tanq", "key-b", {"generator": "g"}, 2.0)
    assert stage_records.finished_outputs(records_dir(config), "train-tanq", "key-b") == {"generator": "g"}
    assert stage_records.finished_outputs(records_dir(config), "train-tanq", "key-a") is None
