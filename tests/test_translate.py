"""The translate stage on Ray Data: two views per case on the source grid, resuming, and refusing bad input."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from tanq_ray.config import IngestConfig
from tanq_ray.data.roi import roi_affine, roi_array_to_slices, slices_to_roi_array
from tanq_ray.data.ingest import run_ingest
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.data.shards import Manifest, VolumeRecord, tensor_column
from tanq_ray.models.config import CycleGANConfig, TanqConfig
from tanq_ray.models.registry import build_model
from tanq_ray.train.export import export_generator, load_translator
from tanq_ray.translate import RECORD_FILE, TranslateError, TranslateResult, translate_cohort

IMAGE_SIZE = 32


def export(folder: Path, name: str, seed: int) -> Path:
    """An untrained tiny generator export (plumbing only: the weights do not matter)."""
    torch.manual_seed(seed)
    tanq, cyclegan = TanqConfig(ngf=8, n_blocks=1, nce_layers=(0, 4, 8, 12)), CycleGANConfig(ngf=8, n_blocks=1)
    config = tanq if name == "tanq" else cyclegan
    return export_generator(build_model(name, config, "cpu"), folder)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    """Two phantom ceT1 cases (and their hrT2) ingested at 32 x 32."""
    root = tmp_path_factory.mktemp("translate")
    cohort = generate_cohort(root / "cohort", cases=2, eval_cases=0, size=64, seed=0)
    run_ingest(cohort.train_dir, root / "ingest", IngestConfig(image_size=IMAGE_SIZE), progress=False)
    return root / "ingest"


@pytest.fixture(scope="module")
def generators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generators")
    return {name: export(root / name, name, seed=0) for name in ("tanq", "cyclegan")}


@pytest.fixture(scope="module")
def translated(ingested: Path, generators: dict[str, Path]) -> tuple[TranslateResult, Path]:
    out = ingested.parent / "views"
    return translate_cohort(ingested, generators, out, batch_size=4), out  # several batches per case


def sources(ingest_dir: Path) -> dict[str, VolumeRecord]:
    return {v.case_id: v for v in Manifest.read(ingest_dir).volumes if v.domain == "ceT1"}


def shard_slices(ingest_dir: Path, record: VolumeRecord) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, H, W)`` images and labels of one volume, read straight from its shards."""
    table = pa.concat_tables([pq.read_table(ingest_dir / shard) for shard in record.shards])
    assert table.column("slice_index").to_pylist() == list(range(record.n_slices))
    return tensor_column(table, "image"), tensor_column(table, "label")


def test_every_case_gets_one_roi_volume_per_view(ingested: Path, translated) -> None:
    result, out = translated
    cases = sources(ingested)
    assert len(cases) == 2
    expected = sorted((view, case_id) for view in ("tanq", "cyclegan") for case_id in cases)
    assert sorted((c.view, c.case_id) for c in result.cases) == expected
    assert (result.volumes, result.reused) == (4, 0)
    assert result.slices == 2 * sum(r.n_slices for r in cases.values()) and result.seconds > 0
    for case in result.cases:
        record = cases[case.case_id]
        assert case.image == out / case.view / f"{case.case_id}_hrT2.nii.gz"
        assert case.label == out / case.view / f"{case.case_id}_Label.nii.gz"
        image, label = nib.load(case.image), nib.load(case.label)
        assert image.shape == label.shape == (IMAGE_SIZE, IMAGE_SIZE, record.n_slices)
        np.testing.assert_allclose(image.affine, roi_affine(record.geometry), atol=1e-5)
        np.testing.assert_allclose(label.affine, image.affine, atol=1e-5)
        _, shard_labels = shard_slices(ingested, record)  # the label the translator saw, on the same ROI
        np.testing.assert_array_equal(roi_array_to_slices(np.asarray(label.dataobj)), shard_labels)
        data = image.get_fdata()
        assert data.min() >= 0.0 and data.max() <= 1000.0 and data.std() > 1.0
    ledger = json.loads((out / "tanq" / RECORD_FILE).read_text())
    assert set(ledger["cases"]) == set(cases) and ledger["image_size"] == IMAGE_SIZE


def as_written(slices: np.ndarray) -> np.ndarray:
    """Generator output ``(Z, S, S)`` in [-1, 1] -> the documented [0, 1000] scale as an ROI array."""
    return (slices_to_roi_array(slices) + 1.0) * 500.0


def test_each_volume_is_the_direct_translation_of_its_slices(ingested: Path, generators, translated) -> None:
    _, out = translated
    for record in sources(ingested).values():
        images, labels = shard_slices(ingested, record)
        source, masks = torch.from_numpy(images).float()[:, None], torch.from_numpy(labels).long()
        for view, path in generators.items():
            direct = load_translator(path).translate(source, masks)[:, 0].numpy()
            written = nib.load(out / view / f"{record.case_id}_hrT2.nii.gz").get_fdata()
            assert np.abs(written - as_written(direct)).max() < 0.5  # float16 transit: <= 0.25
            assert np.abs(written - as_written(direct[::-1].copy())).max() > 5.0  # order is visible


def test_rerun_reuses_every_case_and_a_new_generator_redoes_its_view(
    ingested: Path, generators: dict[str, Path], translated, tmp_path: Path
) -> None:
    _, out = translated
    views = tmp_path / "views"
    shutil.copytree(out, views)
    stamps = {p: p.stat().st_mtime_ns for p in views.rglob("*.nii.gz")}
    again = translate_cohort(ingested, generators, views)
    assert (again.reused, again.volumes, again.slices) == (4, 0, 0) and len(again.cases) == 4
    assert {p: p.stat().st_mtime_ns for p in views.rglob("*.nii.gz")} == stamps

    retrained = export(tmp_path / "retrained", "cyclegan", seed=1)
    changed = translate_cohort(ingested, {"tanq": generators["tanq"], "cyclegan": retrained}, views)
    assert (changed.reused, changed.volumes) == (2, 2)
    redone = {p for p in stamps if p.stat().st_mtime_ns != stamps[p]}
    assert redone == set((views / "cyclegan").glob("*.nii.gz"))
    ledger = json.loads((views / "cyclegan" / RECORD_FILE).read_text())
    assert ledger["generator"]["file"] == str(retrained) and len(ledger["cases"]) == 2


def test_a_missing_slice_stops_with_the_case_and_its_index(ingested: Path, generators, tmp_path: Path) -> None:
    broken = tmp_path / "ingest"
    shutil.copytree(ingested, broken)
    record = next(iter(sources(broken).values()))
    shard = broken / record.shards[0]
    table = pq.read_table(shard)
    pq.write_table(table.filter(pc.not_equal(table.column("slice_index"), 3)), shard)
    expected = rf"case '{record.case_id}' \(slices 0\.\.{record.n_slices - 1}\): \[3\] missing in the ceT1 shards"
    with pytest.raises(TranslateError, match=expected):
        translate_cohort(broken, {"cyclegan": generators["cyclegan"]}, tmp_path / "out")


def test_bad_inputs_are_refused_before_any_work(ingested: Path, generators, tmp_path: Path, ray_local) -> None:
    out = tmp_path / "out"
    with pytest.raises(TranslateError, match="generator for view 'tanq' not found: '.*nowhere.pt'"):
        translate_cohort(ingested, {"tanq": tmp_path / "nowhere.pt"}, out)

    manifest = Manifest.read(ingested)
    replace(manifest, root=tmp_path / "hrT2-only", volumes=[v for v in manifest.volumes if v.domain == "hrT2"]).write()
    with pytest.raises(TranslateError, match="lists no ceT1 volume"):
        translate_cohort(tmp_path / "hrT2-only", generators, out)

    payload = torch.load(generators["tanq"], weights_only=True)
    torch.save(payload | {"image_size": 64}, tmp_path / "sized.pt")
    with pytest.raises(TranslateError, match="trained on 64 x 64 slices but the ingest manifest has image_size 32"):
        translate_cohort(ingested, {"tanq": tmp_path / "sized.pt"}, out)

    replace(manifest, root=tmp_path / "odd", settings=manifest.settings | {"image_size": 30}).write()
    with pytest.raises(TranslateError, match="multiple of 4"):
        translate_cohort(tmp_path / "odd", generators, out)

    with pytest.raises(TranslateError, match="cluster has 0 GPUs"):
        translate_cohort(ingested, generators, out, use_gpu=True)
    cpus = int(ray_local.cluster_resources()["CPU"])
    with pytest.raises(TranslateError, match=f"need {cpus + 1} CPUs"):  # an actor on every CPU would starve the reads
        translate_cohort(ingested, generators, out, actors=cpus)
    assert not out.exists()
