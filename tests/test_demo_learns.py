"""The demo configuration learns: Dice floors of the tiny pipeline on the phantom (slow: 9-25 minutes a cohort).

Each cohort runs ``configs/tiny.yaml`` once: the demo's (seed 0, size 96) and
another seed and size (seed 7, size 128), so the settings are not tuned to
one cohort. Floors on the evaluation hrT2 (mean over cases):

- the segmenter's budget: the target-supervised row reaches the recipe's
  floor for it, VS >= 0.7 and cochlea >= 0.5. Since the labels keep their
  volume on the ROI grid (docs/learning-on-a-cpu.md section 29) six runs
  measured 0.83 / 0.70, 0.79 / 0.70 and 0.78 / 0.68 (seed 0), 0.81 / 0.66,
  0.80 / 0.63 and 0.75 / 0.62 (seed 7); before, 0.68-0.83 / 0.52-0.67, so
  the floor was 0.65 / 0.45.
  A broken region of interest fails it (0.39 / 0.00, section 8);
- adaptation: nnUNet trained on pseudo-hrT2 finds the VS on real hrT2 where
  the ceT1-trained one does not, before and after self-training (measured
  0.20-0.56 against 0.00 in most runs). A broken translation fails it
  (identity translators: 0.00, section 8), and so did one unlucky seed-0
  run (0.01 / 0.03, section 16): at this budget the check can fail on
  run-to-run spread alone;
- the recipe's goal for the final adapted row, VS >= 0.5 and cochlea >= 0.3,
  is not reached reliably: seed 7 reached both in two runs (0.55 / 0.37, round 1
  re-trained with the cochlea rule, docs/learning-on-a-cpu.md section 16),
  and 0.48 / 0.26 with the structure contrast of section 17, 0.30 / 0.32
  and 0.52 / 0.46 with the rules on the predictions as well (section 18);
  seed 0 not the VS floor
  (0.42 / 0.26; 0.35 / 0.16 and 0.16 / 0.13 with the structure contrast,
  0.33 / 0.29, 0.23 / 0.26 and 0.43 / 0.36 with the rules on the
  predictions). With the unlabelled VS rim of section 19: seed 0 0.497 /
  0.15 (just under the VS floor; the cochlea lost by round 0) and 0.13 /
  0.13 (a round 0 that drew almost no VS), seed 7 0.29 / 0.41. With the
  fluid rule of section 20: seed 0 0.57 / 0.38, 0.06 / 0.00, 0.60 / 0.16,
  0.49 / 0.38, 0.45 / 0.46, 0.61 / 0.07 and 0.55 / 0.27, seed 7
  0.59 / 0.36, 0.39 / 0.20 and 0.44 / 0.41 (with the VS texture of section
  25, not adopted: seed 0 0.30 / 0.11, seed 7 0.52 / 0.04; its darker-only
  form, section 26: 0.58 / 0.01 and 0.42 / 0.22). With the erased
  structures of the pseudo-hrT2 unlabelled (section 27): seed 7
  0.62 / 0.38 and 0.55 / 0.21, seed 0 0.50 / 0.17 and 0.65 / 0.26 (redrawn instead,
  section 28, not adopted: seed 7 0.66 / 0.16, seed 0 0.48 / 0.16). With
  labels that keep their volume (section 29): seed 0 0.62 / 0.41 and
  0.28 / 0.44, seed 7 0.39 / 0.04 (its adapted rows trained again:
  0.54 / 0.26) and 0.47 / 0.11; redrawn, seed 0 0.48 / 0.32 and seed 7
  0.02 / 0.46. Redrawn with the VS in two of three structure patches
  (section 30): seed 0 0.53 / 0.47 and 0.48 / 0.54, seed 7 0.45 / 0.23 and
  0.59 / 0.46 (an unexpected pass), then seed 0 0.17 / 0.29 and seed 7
  0.17 / 0.50 (trained again on the same translations: 0.38 / 0.41 and
  0.57 / 0.58). With translators for 6 epochs (section 31): seed 0
  0.54 / 0.43 and 0.60 / 0.40, seed 7 0.38 / 0.29 (trained again on the
  same translations: 0.46 / 0.50) and 0.62 / 0.33; then, committed, seed 0
  0.63 / 0.55 (the demo) and 0.58 / 0.44, seed 7 0.61 / 0.50 (this test,
  both cohorts passing). An expected failure,
  not strict: a cohort reaches it in some runs and not in others, so an
  unexpected pass says nothing until both cohorts pass run after run; then
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
