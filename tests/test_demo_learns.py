"""The demo configuration learns: Dice floors of the tiny pipeline on the phantom (slow: 10-25 minutes a cohort).

Each cohort runs ``configs/tiny.yaml`` once: the demo's (seed 0, size 96) and
another seed and size (seed 7, size 128), so the settings are not tuned to
one cohort. Floors on the evaluation hrT2 (mean over cases):

- the segmenter's budget: the target-supervised row reaches VS >= 0.7 and
  cochlea >= 0.5 (measured 0.74-0.83 / 0.62-0.73 since the labels keep their
  volume, docs/learning-on-a-cpu.md section 29). A broken region of interest
  fails it (0.39 / 0.00, section 8);
- adaptation: nnUNet trained on pseudo-hrT2 finds the VS on real hrT2 where
  the ceT1-trained one does not, before and after self-training. A broken
  translation fails it (identity translators: 0.00, section 8);
- the recipe's goal for the final adapted row, VS >= 0.5 and cochlea >= 0.3.
  With the committed configuration it was met in most runs of both cohorts,
  not in all (every run is listed in docs/learning-on-a-cpu.md sections
  16-32 and docs/performance.md): an expected failure, not strict, so an
  unexpected pass says nothing; the marker goes when both cohorts pass run
  after run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tanq_ray.config import load_config
from tanq_ray.pipeline import run_pipeline

REPO = Path(__file__).resolve().parent.parent
COHORTS = {"demo": [], "seed7-size128": ["phantom.seed=7", "phantom.size=128"]}


@pytest.fixture(scope="module", params=list(COHORTS))
def rows(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ray_local) -> dict[str, dict[str, float]]:
    """Row name -> mean Dice per class of one tiny pipeline run on one cohort."""
    out = tmp_path_factory.mktemp(request.param)
    overrides = [f"output_dir={out / 'out'}", f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}", *COHORTS[request.param]]
    result = run_pipeline(load_config(REPO / "configs" / "tiny.yaml", overrides))
    with (result.evaluation_dir / "results.csv").open() as handle:
        return {row["run"]: {k: float(v) for k, v in row.items() if k.startswith("dice_")} for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_the_target_supervised_row_learns_both_structures(rows: dict[str, dict[str, float]]) -> None:
    target = rows["target-supervised"]
    assert target["dice_vs"] >= 0.7 and target["dice_cochlea"] >= 0.5, rows


@pytest.mark.slow
def test_nnunet_trained_on_pseudo_hrT2_finds_the_vs_on_real_hrT2(rows: dict[str, dict[str, float]]) -> None:
    source = rows["source-only"]
    for adapted in (rows["multi-view (no self-training)"], rows["self-training round 1"]):
        assert adapted["dice_vs"] >= source["dice_vs"] + 0.15, rows
    assert rows["multi-view (no self-training)"]["dice_mean"] > source["dice_mean"], rows


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="the tiny budget reaches the final row's floors in some runs only (docs/learning-on-a-cpu.md)")
def test_the_final_adapted_row_reaches_the_recipe_floors(rows: dict[str, dict[str, float]]) -> None:
    final = rows["self-training round 1"]
    assert final["dice_vs"] >= 0.5 and final["dice_cochlea"] >= 0.3, rows
