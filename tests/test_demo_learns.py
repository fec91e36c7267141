"""The demo configuration learns: Dice floors of the tiny pipeline on the phantom (slow: about 13 minutes a cohort).

Each cohort runs ``configs/tiny.yaml`` once: the demo's (seed 0, size 96) and
another seed and size (seed 7, size 128), so the settings are not tuned to
one cohort. Two sets of floors on the evaluation hrT2 (mean over cases):

- what the demo reaches today (docs/performance.md, "Pipeline"), a little under the
  measured values: the segmenter learns the VS and cochlea from real hrT2,
  nnUNet trained on pseudo-hrT2 finds the VS and the cochlea on real hrT2
  where the ceT1-trained one does not, and after self-training it still
  does. A broken region of interest or a broken translation fails them;
- the recipe's goal: the target-supervised row reaches VS >= 0.7 and
  cochlea >= 0.5, the final adapted row VS >= 0.5 and cochlea >= 0.3.
  Not reached yet (docs/learning-on-a-cpu.md, sections 8-9): a
  strict expected failure, so it fails the day the demo reaches them and
  the marker must go.
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
def test_tiny_pipeline_reaches_the_demo_floors(rows: dict[str, dict[str, float]]) -> None:
    source, target = rows["source-only"], rows["target-supervised"]
    multi_view, final = rows["multi-view (no self-training)"], rows["self-training round 1"]
    # measured with every patch around a structure (docs/learning-on-a-cpu.md, section 11), three runs:
    # target-supervised VS 0.45-0.69, cochlea 0.30-0.55; the adapted rows VS 0.29-0.44, cochlea 0.16-0.30
    assert target["dice_vs"] >= 0.4 and target["dice_cochlea"] >= 0.25, rows
    for adapted in (multi_view, final):
        assert adapted["dice_vs"] >= source["dice_vs"] + 0.15, rows
        assert adapted["dice_cochlea"] >= source["dice_cochlea"] + 0.1, rows


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the tiny budget does not reach the recipe's floors yet (docs/learning-on-a-cpu.md)")
def test_tiny_pipeline_reaches_the_recipe_floors(rows: dict[str, dict[str, float]]) -> None:
    target, final = rows["target-supervised"], rows["self-training round 1"]
    assert target["dice_vs"] >= 0.7 and target["dice_cochlea"] >= 0.5, rows
    assert final["dice_vs"] >= 0.5 and final["dice_cochlea"] >= 0.3, rows
    assert rows["multi-view (no self-training)"]["dice_mean"] > rows["source-only"]["dice_mean"], rows
