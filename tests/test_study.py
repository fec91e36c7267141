"""The ablation study (`tanq study`): which translators each row trains on, the table, the cheap-score correlations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tanq_ray.config import ConfigError, load_config
from tanq_ray.models.ablations import ABLATION_ROWS, PAPER_NAMES, SEGMENTATION_ROWS, ablation_config
from tanq_ray.stages.data import DataFolders
from tanq_ray.stages.segment import RowOutputs
from tanq_ray.study import score_correlations, study_stages, study_table, translator_key, translator_trial
from tanq_ray.study_rows import StudyRow, Translator, studied_translators, study_rows
from tanq_ray.tune.space import trial_config


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


def _translators(rows: list[str], grid: str = "{}") -> list[str]:
    config = load_config("configs/study-cpu.yaml", [f"study.rows=[{','.join(rows)}]", f"study.compare_to={rows[0]}", f"study.grid={grid}"])
    return [t.name for t in studied_translators(study_rows(config))]


def test_the_study_trains_each_needed_translator_once_per_seed() -> None:
    assert _translators(["multi_view", "tanq", "source-only"]) == ["qs_attn", "cyclegan", "tanq"]
    assert _translators(["source-only", "target-supervised"]) == []
    config = load_config("configs/study-cpu.yaml", ["study.rows=[multi_view,source-only]", "study.compare_to=multi_view"])
    stages = study_stages(config)
    names = [stage.name for stage in stages]
    assert names[:5] == ["ingest", "translators", "translate seed 0", "translate seed 1", "translate seed 2"]
    assert names[5:7] == ["Multi-view seed 0", "source-only seed 0"] and names[-1] == "table"
    by_name = {stage.name: stage for stage in stages}
    assert by_name["Multi-view seed 0"].needs == ("ingest", "translate seed 0")
    assert by_name["source-only seed 0"].needs == ("ingest",)  # a reference row needs no translator
    assert by_name["Multi-view seed 0"].keyed_by == ("ingest",)  # keyed by its own translators (its reads), not by every one


def test_a_grid_adds_a_row_per_value_with_only_that_model_s_translators_changed(tmp_path: Path) -> None:
    grid = '{"models.tanq.decoder_norm": [in, rn]}'
    config = load_config("configs/study-cpu.yaml", ["study.rows=[cyclegan,tanq,source-only]", "study.compare_to=tanq", f"study.grid={grid}"])
    rows = study_rows(config)
    assert [row.title for row in rows] == ["CycleGAN", "Ours", "Ours [decoder_norm=in]", "Ours [decoder_norm=rn]", "source-only"]
    variant = rows[2]
    assert variant.name == "tanq--decoder_norm-in"
    assert variant.translators == (Translator("cyclegan"), Translator("tanq", (("models.tanq.decoder_norm", "in"),)))
    # CycleGAN's view is shared by every Ours row: trained once per seed; each grid value is one more translator
    assert [t.name for t in studied_translators(rows)] == ["cyclegan", "tanq", "tanq--decoder_norm-in", "tanq--decoder_norm-rn"]
    # the variant's translator trains with the grid's value over its row's own settings
    trained_with = trial_config(config, translator_trial(variant.translators[1], 0))
    assert (trained_with.models.tanq.decoder_norm, trained_with.models.tanq.encoder_norm, trained_with.train.seed) == ("in", "rn", 0)
    stages = {stage.name: stage for stage in study_stages(config)}
    assert "Ours [decoder_norm=in] seed 2" in stages
    reads = stages["Ours [decoder_norm=in] seed 0"].reads(config, {"ingest": DataFolders(tmp_path, None, None)})
    assert reads["views"] == ["cyclegan", "tanq--decoder_norm-in"]
    assert reads["translators"] == [translator_key(config, t, 0) for t in variant.translators]
    assert reads["translators"][1] != translator_key(config, Translator("tanq"), 0)


def test_a_translator_s_key_follows_its_own_settings_and_seed() -> None:
    config = load_config("configs/study-cpu.yaml")
    key = translator_key(config, Translator("qs_attn"), 0)
    assert key == translator_key(load_config("configs/study-cpu.yaml", ["models.cyclegan.epochs=9"]), Translator("qs_attn"), 0)
    assert key != translator_key(load_config("configs/study-cpu.yaml", ["models.tanq.epochs=9"]), Translator("qs_attn"), 0)
    assert key != translator_key(config, Translator("qs_attn"), 1)
    assert key != translator_key(config, Translator("cut"), 0)
    # a grid value that is the row's own setting is the same translator: trained once
    assert key == translator_key(config, Translator("qs_attn", (("models.tanq.decoder_norm", "in"),)), 0)
    assert key != translator_key(config, Translator("qs_attn", (("models.tanq.decoder_norm", "rn_rain"),)), 0)


def test_study_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="study.rows"):
        load_config("configs/study-cpu.yaml", ["study.rows=[multi_view,ours]"])
    with pytest.raises(ConfigError, match="compare_to"):
        load_config("configs/study-cpu.yaml", ["study.rows=[cut]"])
    with pytest.raises(ConfigError, match="study.seeds"):
        load_config("configs/study-cpu.yaml", ["study.seeds=[1,1]"])
    with pytest.raises(ConfigError, match="'segment.epochs' is not a translator setting"):
        load_config("configs/study-cpu.yaml", ['study.grid={"segment.epochs": [1, 2]}'])
    with pytest.raises(ConfigError, match="'models.tanq.norm' is not a translator setting"):
        load_config("configs/study-cpu.yaml", ['study.grid={"models.tanq.norm": [in]}'])
    with pytest.raises(ConfigError, match="distinct values"):
        load_config("configs/study-cpu.yaml", ['study.grid={"models.tanq.ngf": [8, 8]}'])


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
        StudyRow("cyclegan"): _outputs({0: [0.2, 0.3, 0.4], 1: [0.3, 0.3, 0.5]}),
        StudyRow("tanq"): _outputs({0: [0.4, 0.5, 0.5], 1: [0.6, 0.5, 0.8]}),
        StudyRow("source-only"): _outputs({0: [0.0, 0.0, 0.1], 1: [0.0, 0.1, 0.0]}),
        StudyRow("target-supervised"): _outputs({0: [0.8, 0.9, 0.8], 1: [0.9, 0.8, 0.9]}),
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
        StudyRow("cyclegan"): _outputs({0: [0.2], 1: [0.25]}),
        StudyRow("qs_attn"): _outputs({0: [0.3], 1: [0.35]}),
        StudyRow("multi_view"): _outputs({0: [0.5], 1: [0.45]}),
        StudyRow("source-only"): _outputs({0: [0.0], 1: [0.0]}),  # no translator: not a point
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


def test_grid_values_name_rows_safely_and_clashing_names_are_refused() -> None:
    grid = '{"models.tanq.nce_layers": [[0, 4, 8], [0, 4]]}'
    config = load_config("configs/study-cpu.yaml", ["study.rows=[tanq]", f"study.grid={grid}"])
    rows = study_rows(config)
    assert [row.name for row in rows] == ["tanq", "tanq--nce_layers-0-4-8", "tanq--nce_layers-0-4"]
    assert rows[1].title == "Ours [nce_layers=[0, 4, 8]]"
    clash = '{"models.tanq.decoder_norm": [rn_rain, "rn rain"]}'  # both would name the folder tanq--decoder_norm-rn-rain
    with pytest.raises(ConfigError, match="same name"):
        study_rows(load_config("configs/study-cpu.yaml", ["study.rows=[tanq]", f"study.grid={clash}"]))
