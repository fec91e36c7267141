"""Ray Tune sweeps: trial planning, the structure score, and a sweep whose driver is killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import ingest_tiny_phantom
from tanq_ray.cli import main
from tanq_ray.config import ConfigError, load_config
from tanq_ray.tune.space import plan_trials, trial_config
from tanq_ray.tune.structure import structure_band, structure_score
from tanq_ray.tune.sweep import concurrent_trials, rank_metric, rank_order, reference_contrast, run_sweep

TINY_MODEL = [
    "models.tanq.ngf=8", "models.tanq.ndf=8", "models.tanq.n_blocks=2", "models.tanq.nce_layers=[0,4,8,12,13]",
    "models.tanq.num_patches=32", "models.cyclegan.ngf=8", "models.cyclegan.ndf=8", "models.cyclegan.n_blocks=2",
    "models.tanq.epochs=1", "models.cyclegan.epochs=1", "train.batch_size=2", "train.cpus_per_worker=0.5",
    "train.shuffle_buffer=0", "train.visual_every=100",
]  # fmt: skip


def test_trials_are_rows_times_grid_and_model_specific_axes_only_vary_their_model() -> None:
    config = load_config(
        None,
        ["sweep.rows=[cut,cyclegan,tanq]", "sweep.grid={models.tanq.lambda_nce: [1.0, 2.0], train.batch_size: [2, 4]}"],
    )
    trials = plan_trials(config.sweep)
    assert [t.row for t in trials] == ["cut"] * 4 + ["cyclegan"] * 2 + ["tanq"] * 4
    assert len({t.name for t in trials}) == len(trials)
    assert all("models.tanq.lambda_nce" not in t.overrides for t in trials if t.row == "cyclegan")
    tanq = trial_config(config, trials[-1])
    assert (tanq.train.model, tanq.models.tanq.encoder_norm, tanq.models.tanq.decoder_norm) == ("tanq", "rn", "rn_rain")
    assert (tanq.models.tanq.lambda_nce, tanq.train.batch_size) == (2.0, 4)
    cut = trial_config(config, trials[0])
    assert (cut.models.tanq.patch_select, cut.models.tanq.segdecoder, cut.models.tanq.encoder_norm) == ("random", False, "in")


def test_random_axes_are_drawn_reproducibly_within_bounds() -> None:
    overrides = ["sweep.rows=[tanq]", "sweep.random={models.tanq.optim.lr: [loguniform, [1e-4, 1e-3]]}", "sweep.num_samples=5"]
    first, second = plan_trials(load_config(None, overrides).sweep), plan_trials(load_config(None, overrides).sweep)
    values = [t.overrides["models.tanq.optim.lr"] for t in first]
    assert values == [t.overrides["models.tanq.optim.lr"] for t in second]
    assert len(set(values)) == 5 and all(1e-4 <= v <= 1e-3 for v in values)
    other_seed = plan_trials(load_config(None, [*overrides, "sweep.seed=1"]).sweep)
    assert [t.overrides["models.tanq.optim.lr"] for t in other_seed] != values


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sweep.rows=[cut,nope]"], "rows must be distinct names"),
        (["sweep.random={models.tanq.optim.lr: [uniform, [3, 1]]}"], "low < high"),
        (["sweep.random={models.tanq.optim.lr: [gaussian, [0, 1]]}"], "sweep.random"),
    ],
)
def test_bad_sweep_settings_are_refused_with_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_trials(load_config(None, overrides).sweep)


def test_an_axis_on_an_unknown_key_names_the_trial() -> None:
    config = load_config(None, ["sweep.rows=[cut]", "sweep.grid={models.tanq.lambda_nope: [1.0]}"])
    with pytest.raises(ConfigError, match=r"00-cut-lambda_nope=1.*lambda_nope.*is not one of"):
        trial_config(config, plan_trials(config.sweep)[0])


def test_concurrency_leaves_half_a_cpu_per_trial_for_its_data() -> None:
    config = load_config(None, ["train.cpus_per_worker=0.5"])
    assert concurrent_trials(config, {"CPU": 2.0}, n_trials=6) == 2
    assert concurrent_trials(config, {"CPU": 2.0}, n_trials=1) == 1
    assert concurrent_trials(load_config(None, ["train.num_workers=2"]), {"CPU": 2.0}, 6) == 1
    assert concurrent_trials(load_config(None, ["train.use_gpu=true"]), {"CPU": 16.0, "GPU": 4.0}, 6) == 4
    assert concurrent_trials(load_config(None, ["sweep.max_concurrent_trials=3"]), {"CPU": 64.0}, 6) == 3


def test_trials_rank_highest_score_or_lowest_contrast_gap_first_and_unmeasured_last() -> None:
    rows = [
        {"trial": "a", "structure_score": 0.6, "cochlea_contrast_gap": 0.4},
        {"trial": "b", "structure_score": 0.8, "cochlea_contrast_gap": float("nan")},
        {"trial": "c", "structure_score": 0.7, "cochlea_contrast_gap": 0.1},
        {"trial": "d"},
    ]
    assert [r["trial"] for r in rank_order(rows, "structure_score")] == ["b", "c", "a", "d"]
    assert [r["trial"] for r in rank_order(rows, "cochlea_contrast_gap")] == ["c", "a", "b", "d"]
    assert rank_metric(load_config(None, [])) == "structure_score"
    assert rank_metric(load_config(None, ["sweep.downstream=true"])) == "dice_mean"
    assert rank_metric(load_config(None, ["sweep.rank_by=vs_contrast_gap"])) == "vs_contrast_gap"
    with pytest.raises(ConfigError, match="needs downstream"):
        load_config(None, ["sweep.rank_by=dice_mean"])


def test_ranking_by_a_contrast_gap_without_labelled_real_hrT2_is_refused_before_training(tmp_path: Path) -> None:
    overrides = [f"output_dir={tmp_path}", "phantom.cases=1", "phantom.eval_cases=0", "phantom.size=48"]
    assert reference_contrast(load_config(None, overrides)) is None  # nothing to compare with: no gaps, no error
    with pytest.raises(ConfigError, match="rank_by 'cochlea_contrast_gap'.*data.eval_labels_dir"):
        reference_contrast(load_config(None, [*overrides, "sweep.rank_by=cochlea_contrast_gap"]))


def _disc(shift: int = 0) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    return ((((x - 24 - shift) ** 2 + (y - 22) ** 2) < 81).float() * 2 - 1)[None]


def test_structure_score_is_one_for_identity_and_contrast_inversion_and_falls_when_edges_move() -> None:
    torch.manual_seed(0)
    source = _disc() + 0.03 * torch.randn(1, 48, 48)
    band = structure_band((_disc() > 0).long(), radius=3)
    assert structure_score(source, source, band).item() == pytest.approx(1.0)
    assert structure_score(source, 5 - 3 * source, band).item() == pytest.approx(1.0, abs=1e-5)
    moved = structure_score(source, _disc(shift=4) + 0.03 * torch.randn(1, 48, 48), band).item()
    assert 0.0 <= moved < 0.6
    assert structure_score(source, torch.zeros(1, 48, 48), band).item() == pytest.approx(0.0)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    return ingest_tiny_phantom(tmp_path_factory.mktemp("sweep"))


def test_a_changed_sweep_is_not_resumed_under_the_same_name(ingested: Path, tmp_path: Path) -> None:
    folder = ingested / "sweep" / "ablation"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps({"fingerprint": "0000", "run_id": "x"}))
    config = load_config(None, [f"output_dir={ingested}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'm.db'}", *TINY_MODEL])
    try:
        with pytest.raises(ConfigError, match="set sweep.name"):
            run_sweep(config)
    finally:
        (folder / "sweep.json").unlink()


def _records(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("trials/*/trial.json"))}


@pytest.mark.slow  # 2.5 minutes: `make test` stays under 20 minutes on 2 cores
def test_a_sweep_whose_driver_is_killed_resumes_without_rerunning_finished_trials(ingested: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "sweep", f"output_dir={ingested}", f"tracking.tracking_uri={uri}", "tracking.experiment=sweep", "sweep.name=killed",
        "sweep.rows=[cut,cyclegan]", "sweep.max_concurrent_trials=1", "sweep.score_slices=8", *TINY_MODEL,
    ]  # fmt: skip
    folder = ingested / "sweep" / "killed"
    env = os.environ | {"RAY_ADDRESS": "local"}  # the driver starts (and takes down) its own Ray instance
    driver = subprocess.Popen(
        [sys.executable, "-m", "tanq_ray.cli", *args], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not any("metrics" in r for r in _records(folder).values()):
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "no trial finished within 300 s"
            time.sleep(1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = _records(folder)
    finished_first = [name for name, record in before.items() if "metrics" in record]
    assert len(finished_first) == 1 and len(before) <= 2

    resumed = subprocess.run([sys.executable, "-m", "tanq_ray.cli", *args], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _records(folder)
    assert set(after) == {"00-cut", "01-cyclegan"} and all("metrics" in r for r in after.values())
    assert after[finished_first[0]] == before[finished_first[0]]  # not run again: same record, one attempt
    assert after[finished_first[0]]["attempts"] == 1
    table = (folder / "results.csv").read_text().splitlines()
    assert len(table) == 3 and all(line.endswith("finished") for line in table[1:])

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("command") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("stage") == "trial"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"  # the interrupted run was reopened, not duplicated
    assert sorted(r.data.tags["trial"] for r in trials) == ["00-cut", "01-cyclegan"]
    assert all(r.data.tags["mlflow.parentRunId"] == sweeps[0].info.run_id for r in trials)
    assert all(0.0 <= r.data.metrics["structure_score"] <= 1.0 for r in trials)
    artifacts = {a.path for a in client.list_artifacts(sweeps[0].info.run_id)}
    assert {"results.md", "results.csv"} <= artifacts


@pytest.mark.slow
def test_a_downstream_sweep_ranks_by_the_dice_of_nnunet_trained_on_each_trials_translations(tmp_path: Path, ray_local) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [
        f"output_dir={tmp_path / 'out'}", f"tracking.tracking_uri={uri}", "tracking.experiment=downstream",
        "phantom.cases=2", "phantom.eval_cases=2", "phantom.size=64", "ingest.image_size=32",
    ]  # fmt: skip
    assert main(["ingest", *common]) == 0
    segment = [
        "segment.configurations=[2d]", "segment.folds=2", "segment.epochs=1", "segment.iterations_per_epoch=2",
        "segment.batch_size=2", "segment.test_time_mirroring=false",
    ]  # fmt: skip
    config = load_config(None, [*common, *TINY_MODEL, *segment, "sweep.rows=[cut,cyclegan]", "sweep.downstream=true", "sweep.score_slices=8"])
    result = run_sweep(config)
    assert [row["status"] for row in result.table.rows] == ["finished", "finished"]
    dice = [row["dice_mean"] for row in result.table.rows]
    assert all(0.0 <= d <= 1.0 for d in dice) and dice == sorted(dice, reverse=True)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("downstream").experiment_id])
    trials = {r.info.run_id: r for r in runs if r.data.tags.get("stage") == "trial"}
    assert all("dice_vs" in r.data.metrics for r in trials.values())
    folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in trials]
    assert len(folds) == 4  # 2 folds per trial, nested under the trial's run
