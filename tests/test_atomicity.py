"""A killed ingest leaves no readable half shard, and the next run finishes the job."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tanq_ray.config import IngestConfig
from tanq_ray.data.ingest import run_ingest
from tanq_ray.data.shards import MANIFEST_NAME

IMAGE_SIZE = 192


def settled_count(records: Path) -> int:
    """Finished volume records once none has appeared for 2 s: a task already running may finish after its driver died."""
    count = -1
    while (current := len(list(records.glob("*.json")))) != count:
        count = current
        time.sleep(2)
    return count


def test_killed_ingest_leaves_only_whole_shards_and_resumes(ray_local, make_cohort, tmp_path: Path) -> None:
    folder = make_cohort(n_labelled=4, n_unlabelled=4, shape=(120, 140, 30))
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "tanq_ray.cli", "ingest",
        f"output_dir={out}", f"data.train_dir={folder}", f"ingest.image_size={IMAGE_SIZE}", "ingest.shard_rows=4",
        "ingest.max_parallel=1", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "ingest" / "volumes"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (records.is_dir() and any(records.glob("*.json"))):
        assert process.poll() is None, "ingest finished or died before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    shards = out / "ingest"
    assert not (shards / MANIFEST_NAME).exists()
    finished_before = settled_count(records)
    assert 1 <= finished_before < 8

    for path in shards.rglob("*.parquet"):
        if path.name.startswith("."):
            continue  # temporary files of unfinished writes; readers never list them
        table = pq.read_table(path)  # raises on a truncated file
        assert 1 <= table.num_rows <= 4

    result = run_ingest(folder, shards, IngestConfig(image_size=IMAGE_SIZE, shard_rows=4), progress=False)
    assert result.reused == finished_before and result.processed == 8 - finished_before
    for record in result.manifest.volumes:
        assert sum(pq.read_metadata(shards / s).num_rows for s in record.shards) == record.n_slices
