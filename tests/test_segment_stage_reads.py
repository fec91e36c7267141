"""Which segmentation rows a segment setting re-runs: the stage keys' reads, without training anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tanq_ray.config import load_config
from tanq_ray.stages.data import DataFolders
from tanq_ray.stages.segment import reference_stage, round_stage

EVERY_ROW = {"segment-round-0", "segment-round-1", "segment-source-only", "segment-target-supervised"}


def _reads(tmp_path: Path, *overrides: str) -> dict[str, dict]:
    config = load_config(None, [f"output_dir={tmp_path / 'out'}", "segment.self_training_rounds=1", *overrides])
    inputs = {"ingest": DataFolders(tmp_path / "train", tmp_path / "eval", tmp_path / "eval_labels", tmp_path / "truth")}
    stages = [round_stage(0), round_stage(1), reference_stage("source-only"), reference_stage("target-supervised")]
    return {stage.name: stage.reads(config, inputs) for stage in stages}


@pytest.mark.parametrize(
    ("override", "rerun"),
    [
        ("segment.structure_contrast=[-0.5,2.0]", {"segment-round-0", "segment-round-1"}),
        ("segment.structure_contrast_probability=1.0", {"segment-round-0", "segment-round-1"}),
        ("segment.vs_patch_share=0.67", {"segment-round-0", "segment-round-1"}),
        ("segment.vs_texture=[0.0,0.4]", {"segment-round-0", "segment-round-1"}),
        ("segment.views=[tanq]", {"segment-round-0", "segment-round-1"}),
        ("segment.translated_structure_min_contrast=0.15", {"segment-round-0", "segment-round-1"}),
        ("segment.translated_smoothing=true", {"segment-round-0", "segment-round-1"}),
        ("segment.refine_one_cochlea_per_side=true", {"segment-round-1"}),
        ("segment.pseudo_label_vs_margin_mm=4", {"segment-round-1"}),
        ("segment.self_training_warm_start=true", {"segment-round-1"}),
        (
            "segment.pseudo_label_vs_missing_unlabelled=true segment.pseudo_label_vs_margin_mm=4 segment.refine_vs_location_mm=5",
            {"segment-round-1"},
        ),
        ("segment.epochs=3", {"segment-round-0", "segment-round-1", "segment-source-only", "segment-target-supervised"}),
        ("segment.refine_predictions=true", EVERY_ROW),
    ],
)
def test_a_setting_changes_the_keys_of_the_rows_that_read_it_only(tmp_path: Path, override: str, rerun: set[str]) -> None:
    before, after = _reads(tmp_path), _reads(tmp_path, *override.split())
    assert {name for name in before if before[name] != after[name]} == rerun


def test_redrawing_erased_structures_re_runs_the_adapted_rows_only(tmp_path: Path) -> None:
    rule = ("segment.translated_structure_min_contrast=0.15", "segment.structure_contrast=[-0.5,2.0]")
    before, after = _reads(tmp_path, *rule), _reads(tmp_path, *rule, "segment.translated_erased_structures=redrawn")
    assert {name for name in before if before[name] != after[name]} == {"segment-round-0", "segment-round-1"}


RULES = [
    "segment.refine_one_cochlea_per_side=true", "segment.refine_vs_location_mm=5", "segment.refine_min_confidence=0",
    "segment.refine_vs_max_fluid_share=0.8",
]


@pytest.mark.parametrize("rule", RULES)
def test_every_row_that_refines_its_predictions_reads_the_rules(tmp_path: Path, rule: str) -> None:
    refining = "segment.refine_predictions=true"
    before, after = _reads(tmp_path, refining), _reads(tmp_path, refining, rule)
    assert {name for name in before if before[name] != after[name]} == EVERY_ROW
