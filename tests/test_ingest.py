"""The ingest stage on Ray: shards, manifest, skipping bad volumes, resuming, readers."""

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import save_nifti
from tanq_ray.config import IngestConfig
from tanq_ray.data.ingest import IngestError, run_ingest
from tanq_ray.data.readers import SliceCollate, read_domain
from tanq_ray.data.shards import Manifest

SETTINGS = IngestConfig(image_size=64, shard_rows=8)


def test_ingest_writes_shards_and_manifest(ray_local, make_cohort, tmp_path: Path) -> None:
    folder = make_cohort(n_labelled=2, n_unlabelled=1)
    result = run_ingest(folder, tmp_path / "shards", SETTINGS, progress=False)
    manifest = Manifest.read(tmp_path / "shards")
    assert manifest.counts()["volumes_ceT1"] == 2 and manifest.counts()["volumes_hrT2"] == 1
    assert result.processed == 3 and result.reused == 0
    record = manifest.record("crossmoda2022_ldn_1_ceT1")
    assert len(record.shards) == -(-record.n_slices // 8)  # shard_rows caps rows per file
    rows = sum(pq.read_metadata(tmp_path / "shards" / s).num_rows for s in record.shards)
    assert rows == record.n_slices
    table = pq.read_table(tmp_path / "shards" / record.shards[0])
    assert table.column("case_id")[0].as_py() == "crossmoda2022_ldn_1"
    assert table.column("site")[0].as_py() == "ldn" and table.column("domain")[0].as_py() == "ceT1"
    assert table.column("slice_index").to_pylist() == list(range(8))
    hr_table = pq.read_table(tmp_path / "shards" / manifest.record("crossmoda2022_etz_100_hrT2").shards[0])
    assert hr_table.column("label").null_count == hr_table.num_rows


def test_rerun_skips_finished_volumes_and_redoes_changed_settings(ray_local, make_cohort, tmp_path: Path) -> None:
    folder = make_cohort(n_labelled=1, n_unlabelled=1)
    run_ingest(folder, tmp_path / "shards", SETTINGS, progress=False)
    again = run_ingest(folder, tmp_path / "shards", SETTINGS, progress=False)
    assert (again.processed, again.reused) == (0, 2)
    changed = run_ingest(folder, tmp_path / "shards", SETTINGS.model_copy(update={"image_size": 32}), progress=False)
    assert (changed.processed, changed.reused) == (2, 0)
    assert changed.manifest.volumes[0].geometry.image_size == 32


def add_bad_volumes(folder: Path) -> None:
    (folder / "crossmoda2022_ldn_50_ceT1.nii.gz").write_bytes(b"truncated")
    save_nifti(np.zeros((8, 8, 8), np.uint8), folder / "crossmoda2022_ldn_50_Label.nii.gz")
    save_nifti(np.full((8, 8, 8), np.nan, np.float32), folder / "crossmoda2022_etz_51_hrT2.nii.gz")


def test_bad_volumes_are_skipped_and_counted(ray_local, make_cohort, tmp_path: Path, caplog) -> None:
    folder = make_cohort(n_labelled=1, n_unlabelled=1)
    add_bad_volumes(folder)
    result = run_ingest(folder, tmp_path / "shards", SETTINGS, progress=False)
    skipped = {s.key: s for s in result.manifest.skipped}
    assert set(skipped) == {"crossmoda2022_ldn_50_ceT1", "crossmoda2022_etz_51_hrT2"}
    assert skipped["crossmoda2022_etz_51_hrT2"].file.endswith("crossmoda2022_etz_51_hrT2.nii.gz")
    assert "NaN" in skipped["crossmoda2022_etz_51_hrT2"].reason
    assert Manifest.read(tmp_path / "shards").counts()["volumes_skipped"] == 2
    assert not list((tmp_path / "shards").rglob("*_50_*.parquet")) and not list((tmp_path / "shards").rglob("*_51_*.parquet"))
    assert "crossmoda2022_ldn_50_ceT1.nii.gz" in caplog.text


def _header_only(shape: tuple[int, int, int], path: Path) -> Path:
    """A gzipped NIfTI whose header claims ``shape`` (uint8) but which holds only a few bytes of voxels."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header.set_sform(np.eye(4), code=1)
    buffer = io.BytesIO()
    header.write_to(buffer)
    buffer.write(b"\0" * (int(header["vox_offset"]) - buffer.tell() + 512))
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


def test_volumes_that_used_to_crash_ingest_are_skipped_with_their_reasons(ray_local, make_cohort, tmp_path: Path) -> None:
    folder = make_cohort(n_labelled=1, n_unlabelled=1)
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(folder / "crossmoda2022_etz_60_hrT2.nii.gz"))  # a TypeError before
    _header_only((4000, 4000, 4000), folder / "crossmoda2022_etz_61_hrT2.nii.gz")  # a MemoryError before
    save_nifti(np.ones((8, 8, 8), np.float32), folder / "crossmoda2022_etz_62_hrT2.nii.gz", np.diag([1.0, 1.0, 1000.0, 1.0]))
    result = run_ingest(folder, tmp_path / "shards", SETTINGS, progress=False)
    reasons = {s.key: s.reason for s in result.manifest.skipped}
    assert set(reasons) == {"crossmoda2022_etz_60_hrT2", "crossmoda2022_etz_61_hrT2", "crossmoda2022_etz_62_hrT2"}
    assert "is not a grey level" in reasons["crossmoda2022_etz_60_hrT2"]
    assert "(4000, 4000, 4000) = 64,000,000,000 voxels" in reasons["crossmoda2022_etz_61_hrT2"]
    assert "slices" in reasons["crossmoda2022_etz_62_hrT2"] and "1000.0" in reasons["crossmoda2022_etz_62_hrT2"]
    assert result.manifest.counts()["volumes_ceT1"] == 1 and result.manifest.counts()["volumes_hrT2"] == 1


def test_any_failure_of_one_volume_is_a_skip_naming_the_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tanq_ray.data import ingest
    from tanq_ray.data.layout import VolumeFiles

    def unforeseen(*args, **kwargs):
        raise KeyError("a reader nobody expected to fail")

    monkeypatch.setattr(ingest, "ingest_volume", unforeseen)
    files = VolumeFiles("crossmoda2022_ldn_1", "ceT1", tmp_path / "a.nii.gz")
    skipped = ingest._ingest_task(files, SETTINGS, str(tmp_path))
    assert skipped.file == str(tmp_path / "a.nii.gz") and skipped.reason == "KeyError: 'a reader nobody expected to fail'"


def test_stop_policy_raises_naming_the_file(ray_local, make_cohort, tmp_path: Path) -> None:
    folder = make_cohort(n_labelled=1, n_unlabelled=0)
    add_bad_volumes(folder)
    with pytest.raises(IngestError, match=r"crossmoda2022_(ldn_50_ceT1|etz_51_hrT2)\.nii\.gz"):
        run_ingest(folder, tmp_path / "shards", SETTINGS.model_copy(update={"on_bad_volume": "stop"}), progress=False)
    assert not (tmp_path / "shards" / "manifest.json").exists()


def test_all_volumes_of_a_domain_skipped_stops(ray_local, tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    save_nifti(np.full((8, 8, 8), np.inf, np.float32), folder / "crossmoda2022_etz_1_hrT2.nii.gz")
    with pytest.raises(IngestError, match="every hrT2 volume"):
        run_ingest(folder, tmp_path / "shards", SETTINGS, progress=False)


def test_readers_feed_torch_without_row_decoding(ray_local, make_cohort, tmp_path: Path) -> None:
    folder = make_cohort(n_labelled=2, n_unlabelled=1)
    manifest = run_ingest(folder, tmp_path / "shards", SETTINGS, progress=False).manifest
    collate = SliceCollate.for_manifest(manifest)
    source = read_domain(manifest, "ceT1")
    batches = list(source.iter_torch_batches(batch_size=5, collate_fn=collate))
    assert sum(len(b["image"]) for b in batches) == manifest.counts()["slices_ceT1"]
    image, label = batches[0]["image"], batches[0]["label"]
    assert image.shape == (5, 1, 64, 64) and image.dtype == torch.float32
    assert -1 <= float(image.min()) and float(image.max()) <= 1 and float(image.std()) > 0.1
    assert label.shape == (5, 64, 64) and label.dtype == torch.int64
    labels = torch.cat([b["label"] for b in batches])
    assert set(labels.unique().tolist()) == {0, 1, 2}
    target = next(iter(read_domain(tmp_path / "shards", "hrT2").iter_torch_batches(batch_size=4, collate_fn=collate)))
    assert set(target) == {"image"} and target["image"].shape == (4, 1, 64, 64)


def test_reader_errors_are_clear(ray_local, make_cohort, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run `tanq ingest` first"):
        read_domain(tmp_path / "nothing", "ceT1")
    folder = make_cohort(n_labelled=1, n_unlabelled=0)
    manifest = run_ingest(folder, tmp_path / "shards", SETTINGS, progress=False).manifest
    with pytest.raises(FileNotFoundError, match="lists no hrT2 shard"):
        read_domain(manifest, "hrT2")
    (tmp_path / "shards" / manifest.volumes[0].shards[0]).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        read_domain(manifest, "ceT1")
