"""The demo configuration learns: the floors of the tiny pipeline on the phantom (slow: about 12 minutes each).

Floors (evaluation hrT2, mean over cases): the target-supervised row shows the
segmenter's budget is enough (VS >= 0.7, cochlea >= 0.5); the final adapted
row reaches VS >= 0.5 and cochlea >= 0.3; multi-view beats source-only on
mean Dice. Run for the demo's cohort and for another seed and size, so the
settings are not tuned to one cohort.

The floors are not reached yet (docs/learning-on-a-cpu.md, "Where the demo
stands"): the test is a strict expected failure, so it fails the day the
demo reaches them and the marker must go.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tanq_ray.config import load_config
from tanq_ray.pipeline import run_pipeline

REPO = Path(__file__).resolve().parent.parent


def _rows(evaluation_dir: Path) -> dict[str, dict[str, float]]:
    with (evaluation_dir / "results.csv").open() as handle:
        return {row["run"]: {k: float(v) for k, v in row.items() if k.startswith("dice_")} for row in csv.DictReader(handle)}


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the tiny budget does not reach the floors yet (docs/learning-on-a-cpu.md)")
@pytest.mark.parametrize("cohort", [[], ["phantom.seed=7", "phantom.size=128"]], ids=["demo", "seed7-size128"])
def test_tiny_pipeline_reaches_the_floors(tmp_path: Path, ray_local, cohort: list[str]) -> None:
    overrides = [f"output_dir={tmp_path / 'out'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", *cohort]
    result = run_pipeline(load_config(REPO / "configs" / "tiny.yaml", overrides))
    rows = _rows(result.evaluation_dir)
    final = rows["self-training round 1"]
    assert rows["target-supervised"]["dice_vs"] >= 0.7 and rows["target-supervised"]["dice_cochlea"] >= 0.5, rows
    assert final["dice_vs"] >= 0.5 and final["dice_cochlea"] >= 0.3, rows
    assert rows["multi-view (no self-training)"]["dice_mean"] > rows["source-only"]["dice_mean"], rows
