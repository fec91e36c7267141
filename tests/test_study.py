"""The ablation study (`tanq study`): which translators each row trains on, the table, the cheap-score correlations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tanq_ray.config import ConfigError, load_config
from tanq_ray.models.ablations import ABLATION_ROWS, PAPER_NAMES, SEGMENTATION_ROWS, ablation_config
from tanq_ray.stages.segment import RowOutputs
from tanq_ray.study import (
    score_correlations,
    study_stages,
    study_table,
    translator_key,
    translator_rows,
    translators_config,
)
from tanq_ray.tune.space import plan_trials


def test_each_table_2_row_trains_on_the_paper_s_translators() -> None:
    assert SEGMENTATION_ROWS == {
        "cut": ("cut",),
        "cyclegan": ("cyclegan",),
        "qs_attn": ("qs_attn",),
        "multi_view": ("cyclegan", "qs_attn"),  # the authors' earlier method: CycleGAN + QS-Attn
        "tanq_wo_rain": ("cyclegan", "tanq_wo_rain"),
        "tanq_wo_segdecoder": ("cyclegan", "tanq_wo_segdecoder"),
        "tanq": ("cyclegan", "tanq"),  # Ours: CycleGAN + TANQ
    }
    assert set(PAPER_NAMES) == set(SEGMENTATION_ROWS)
    assert all(view in ABLATION_ROWS for views in SEGMENTATION_ROWS.values() for view in views)
    # the views differ where Table 2 says they do
    _, qs_attn = ablation_config("qs_attn")
    _, ours = ablation_config("tanq")
    _, cut = ablation_config("cut")
    assert (qs_attn.encoder_norm, qs_attn.decoder_norm, qs_attn.segdecoder, qs_attn.patch_select) == ("in", "in", False, "qs_global")
    assert (ours.encoder_norm, ours.decoder_norm, ours.segdecoder, ours.patch_select) == ("rn", "rn_rain", True, "qs_global")
    assert cut.patch_select == "random"


def test_the_study_trains_each_needed_translator_once_per_seed() -> None:
    assert translator_rows(["multi_view", "tanq", "source-only"]) == ["qs_attn", "cyclegan", "tanq"]
    assert translator_rows(["source-only", "target-supervised"]) == []
    config = load_config("configs/study-cpu.yaml", ["study.rows=[multi_view,source-only]", "study.compare_to=multi_view"])
    sweep = translators_config(config, translator_rows(config.study.rows), config.study.seeds)
    trials = plan_trials(sweep.sweep)
    assert sorted((t.row, t.overrides["train.seed"]) for t in trials) == [(r, s) for r in ("cyclegan", "qs_attn") for s in (0, 1, 2)]
    assert not sweep.sweep.downstream  # the study trains its own nnUNet per row
    stages = study_stages(config)
    names = [stage.name for stage in stages]
    assert names[:5] == ["ingest", "translators", "translate seed 0", "translate seed 1", "translate seed 2"]
    assert names[5:7] == ["Multi-view seed 0", "source-only seed 0"] and names[-1] == "table"
    by_name = {stage.name: stage for stage in stages}
    assert by_name["Multi-view seed 0"].needs == ("ingest", "translate seed 0")
    assert by_name["source-only seed 0"].needs == ("ingest",)  # a reference row needs no translator
    assert by_name["Multi-view seed 0"].keyed_by == ("ingest",)  # keyed by its own translators (its reads), not by every one


def test_a_translator_s_key_follows_its_own_settings_and_seed() -> None:
    config = load_config("configs/study-cpu.yaml")
    key = translator_key(config, "qs_attn", 0)
    assert key == translator_key(load_config("configs/study-cpu.yaml", ["models.cyclegan.epochs=9"]), "qs_attn", 0)
    assert key != translator_key(load_config("configs/study-cpu.yaml", ["models.tanq.epochs=9"]), "qs_attn", 0)
    assert key != translator_key(config, "qs_attn", 1)
    assert key != translator_key(config, "cut", 0)


def test_study_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="study.rows"):
        load_config("configs/study-cpu.yaml", ["study.rows=[multi_view,ours]"])
    with pytest.raises(ConfigError, match="compare_to"):
        load_config("configs/study-cpu.yaml", ["study.rows=[cut]"])
    with pytest.raises(ConfigError, match="study.seeds"):
        load_config("configs/study-cpu.yaml", ["study.seeds=[1,1]"])


def _case(case: str, vs: float, cochlea: float) -> dict:
    return {"case_id": case, "dice_vs": vs, "dice_cochlea": cochlea, "assd_vs": 1.0, "assd_cochlea": 1.0}


def _outputs(dice_by_seed: dict[int, list[float]]) -> dict[int, RowOutputs]:
    """Row outputs per seed with per-case Dice (VS = cochlea = the given value) and the summary's mean."""
    return {
        seed: RowOutputs(Path("row"), None, [_case(f"c{i}", d, d) for i, d in enumerate(values)], {"dice_mean": sum(values) / len(values)})
        for seed, values in dice_by_seed.items()
    }


def test_the_table_pools_seeds_and_pairs_rows_by_case_and_seed() -> None:
    config = load_config("configs/study-cpu.yaml", ["study.rows=[cyclegan,tanq,source-only,target-supervised]", "study.seeds=[0,1]"])
    rows = {
        "cyclegan": _outputs({0: [0.2, 0.3, 0.4], 1: [0.3, 0.3, 0.5]}),
        "tanq": _outputs({0: [0.4, 0.5, 0.5], 1: [0.6, 0.5, 0.8]}),
        "source-only": _outputs({0: [0.0, 0.0, 0.1], 1: [0.0, 0.1, 0.0]}),
        "target-supervised": _outputs({0: [0.8, 0.9, 0.8], 1: [0.9, 0.8, 0.9]}),
    }
    table = study_table(config, rows)
    by_name = {row["run"]: row for row in table.rows}
    assert set(by_name) == {"CycleGAN", "Ours", "source-only", "target-supervised"}
    assert by_name["Ours"]["n_cases"] == 6  # 3 cases x 2 seeds
    assert by_name["Ours"]["dice_mean"] == pytest.approx(3.3 / 6)
    p_column = "p (Dice mean vs Ours)"
    assert by_name["Ours"][p_column] is None and 0 < by_name["CycleGAN"][p_column] < 0.05
    # gap closed = (row - source-only) / (target-supervised - source-only) on mean Dice
    assert by_name["Ours"]["gap closed"] == pytest.approx((0.55 - 0.2 / 6) / (5.1 / 6 - 0.2 / 6))


def test_cheap_scores_are_ranked_against_dice_over_rows_and_seeds() -> None:
    rows = {
        "cyclegan": _outputs({0: [0.2], 1: [0.25]}),
        "qs_attn": _outputs({0: [0.3], 1: [0.35]}),
        "multi_view": _outputs({0: [0.5], 1: [0.45]}),
        "source-only": _outputs({0: [0.0], 1: [0.0]}),  # no translator: not a point
    }
    structure = {"cyclegan": 0.1, "qs_attn": 0.3}
    scores = {
        (t, s): {"structure_score": structure[t] + 0.01 * s, "vs_contrast_gap": 1 - structure[t], "cochlea_contrast_gap": math.nan}
        for t in structure
        for s in (0, 1)
    }
    table = {row["score"]: row for row in score_correlations(rows, scores).rows}
    assert table["structure_score"]["points"] == 6
    # Multi-view's score is the mean of CycleGAN's and QS-Attn's (0.2): between them, while its Dice is highest
    assert 0 < table["structure_score"]["spearman_rho"] < 1
    assert table["vs_contrast_gap"]["spearman_rho"] < 0  # a larger gap goes with a lower Dice here
    assert table["cochlea_contrast_gap"]["points"] == 0 and math.isnan(table["cochlea_contrast_gap"]["spearman_rho"])
