from pathlib import Path

import pytest

from tanq_ray.cli import main
from tanq_ray.config import CONFIG_DIR, ConfigError, load_config, parse_override


@pytest.mark.parametrize("name", ["tiny.yaml", "paper.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIG_DIR / name)
    assert config.ingest.spacing == (0.41, 0.41, 1.5)


def test_paper_config_holds_the_paper_settings() -> None:
    config = load_config(CONFIG_DIR / "paper.yaml")
    assert config.ingest.image_size == 256 and config.train.batch_size == 4
    assert (config.models.tanq.epochs, config.models.cyclegan.epochs) == (400, 200)
    assert config.segment.folds == 5 and config.segment.self_training_rounds == 4
    assert config.segment.configurations == ["2d", "3d_fullres"]


def test_overrides_are_typed_yaml_values() -> None:
    config = load_config(None, ["ingest.shard_rows=512", "ingest.spacing=[0.5, 0.5, 2]", "train.use_gpu=true"])
    assert config.ingest.shard_rows == 512
    assert config.ingest.spacing == (0.5, 0.5, 2.0)
    assert config.train.use_gpu is True


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("ingest.shard_rowz=3", ["ingest.shard_rowz", "shard_rows"]),
        ("ingets.shard_rows=3", ["ingets", "ingest"]),
        ("models.tanq.patch_select=attention", ["models.tanq.patch_select", "random", "qs_global"]),
        ("train.batch_size=0", ["train.batch_size", "greater than or equal to 1"]),
        ("ingest.percentiles=[99, 1]", ["ingest.percentiles", "low < high"]),
        ("ingest.spacing=[0.4, 0, 1.5]", ["ingest.spacing", "> 0"]),
        ("ingest=3", ["'ingest' is a section", "shard_rows"]),
        ("output_dir.sub=3", ["'output_dir' is a value"]),
        ("segment.pseudo_label_vs_missing_unlabelled=true", ["pseudo_label_vs_margin_mm", "refine_vs_location_mm"]),
        ("shard_rows", ["key=value"]),
    ],
)
def test_bad_override_names_the_key_and_what_is_allowed(override: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    for fragment in expected:
        assert fragment in str(err.value)


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("ingest:\n  image_sise: 128\n")
    with pytest.raises(ConfigError, match=r"ingest\.image_sise.*image_size"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_eval_labels_need_eval_dir() -> None:
    with pytest.raises(ConfigError, match="eval_labels_dir"):
        load_config(None, ["data.eval_labels_dir=/tmp/labels"])


def test_parse_override_keeps_strings() -> None:
    assert parse_override("tracking.experiment=my run") == ("tracking.experiment", "my run")
    assert parse_override("data.train_dir=") == ("data.train_dir", None)


def test_flat_params_use_dotted_names() -> None:
    flat = load_config(None).flat()
    assert flat["ingest.shard_rows"] == 256
    assert flat["models.tanq.optim.lr"] == 2e-4


def test_cli_rejects_bad_config_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["ingest", f"output_dir={out}", "ingest.shard_rows=-1"])
    assert code == 2
    assert "ingest.shard_rows" in capsys.readouterr().err
    assert not out.exists()


def test_fold_all_needs_exactly_one_configuration() -> None:
    config = load_config(None, ["segment.folds=all", "segment.configurations=[2d]"])
    assert config.segment.fold_ids == ("all",)
    assert load_config(None, ["segment.folds=3"]).segment.fold_ids == (0, 1, 2)
    with pytest.raises(ConfigError, match="segment.*cannot choose between configurations"):
        load_config(None, ["segment.folds=all"])  # the default lists 2d and 3d_fullres
    with pytest.raises(ConfigError, match="segment.folds"):
        load_config(None, ["segment.folds=0"])


def test_every_shipped_config_file_loads() -> None:
    from tanq_ray.tune.space import plan_trials

    files = sorted(Path(__file__).resolve().parents[1].glob("configs/**/*.yaml"))
    assert {f.name for f in files} >= {"tiny.yaml", "paper.yaml", "normalisation.yaml"}
    for path in files:
        load_config(path)
    sweep = load_config(Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "normalisation.yaml")
    trials = plan_trials(sweep.sweep)
    assert len(trials) == 6 and {t.row for t in trials} == {"tanq"}
    assert {(t.overrides["models.tanq.encoder_norm"], t.overrides["models.tanq.decoder_norm"]) for t in trials} == {
        (e, d) for e in ("in", "rn") for d in ("in", "rn", "rn_rain")
    }


def test_a_config_file_builds_on_its_base(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "output_dir: runs/base\nmodels:\n  tanq: {epochs: 5, ngf: 16}\nsweep:\n  grid: {train.seed: [0, 1]}\n"
    )
    (tmp_path / "top.yaml").write_text("base: base.yaml\nmodels:\n  tanq: {ngf: 8}\nsweep:\n  grid: {models.tanq.lambda_nce: [1, 2]}\n")
    config = load_config(tmp_path / "top.yaml")
    assert str(config.output_dir) == "runs/base"
    assert (config.models.tanq.epochs, config.models.tanq.ngf) == (5, 8)  # sections merge key by key
    assert config.sweep.grid == {"models.tanq.lambda_nce": [1, 2]}  # a value that is not a section is replaced
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="its own base"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "typo.yaml").write_text("base: base.yaml\nmodel: {}\n")
    with pytest.raises(ConfigError, match="unknown key 'model'"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "orphan.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "orphan.yaml")
