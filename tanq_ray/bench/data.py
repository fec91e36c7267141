"""``tanq bench data``: ingest throughput and shard read throughput.

Figures:
- ingest volumes/s and slices/s with 1 and 2 Ray tasks at a time (256 x 256);
- Ray Data read of the ceT1 shards into torch batches, slices/s, against the
  public CUT/QS-Attn data path measured in the same run: the same slices as
  8-bit PNG files read by a PyTorch ``DataLoader`` (PIL decode, scale to
  [-1, 1]; its random resize-and-crop is left out, which favours it). One
  timed pass reads the cohort's slices repeated to ``EPOCH_SLICES`` (about an
  epoch of the real 210-volume cohort is 25,000), after an untimed warm-up pass;
- headroom: read throughput over what a training step consumes (one ceT1 and
  one hrT2 slice per sample), at the quoted 27 s per 256 x 256 QS-Attn
  iteration on a 2-core CPU, and the step rate at which headroom would fall to 10x.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from tanq_ray.bench import local_ray
from tanq_ray.bench.report import Figure
from tanq_ray.config import IngestConfig
from tanq_ray.data.ingest import run_ingest
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.data.readers import SliceCollate, read_domain
from tanq_ray.data.shards import Manifest, tensor_column

BATCH_SIZE = 4  # the paper's training batch
PREFETCH_BATCHES = 4
EPOCH_SLICES = 5000
QS_ATTN_SECONDS_PER_STEP_256 = 27.0  # public QS-Attn, 256 x 256, batch 1, 2-core CPU (DESIGN.md)
SLICES_PER_SAMPLE = 2  # one ceT1 + one hrT2


class PngSlices(Dataset):
    """The CUT/QS-Attn way: one PNG per slice, decoded with PIL per item."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        return torch.from_numpy(pixels).div_(127.5).sub_(1.0).unsqueeze(0)


def _write_pngs(manifest: Manifest, folder: Path) -> list[Path]:
    """Every ceT1 slice of the shards as an 8-bit PNG, as CUT's ``trainA`` folder holds them."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in manifest.shard_paths("ceT1"):
        for image in tensor_column(pq.read_table(shard, columns=["image"]), "image"):
            path = folder / f"{len(paths):06d}.png"
            Image.fromarray(((image.astype(np.float32) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)).save(path)
            paths.append(path)
    return paths


def _repeated(manifest: Manifest, repeat: int) -> Manifest:
    """The manifest's volumes ``repeat`` times, as hard links under distinct names.

    (Ray Data reads a path listed twice only once, so copies need their own names.)
    """
    volumes = []
    for copy in range(repeat):
        for record in manifest.volumes:
            shards = []
            for shard in record.shards:
                linked = f"epoch/{copy}/{shard}"
                (manifest.root / linked).parent.mkdir(parents=True, exist_ok=True)
                os.link(manifest.root / shard, manifest.root / linked)
                shards.append(linked)
            volumes.append(replace(record, key=f"{record.key}-{copy}", shards=tuple(shards)))
    return Manifest(manifest.root, manifest.settings, volumes=volumes)


def _timed_pass(one_pass: Callable[[], int]) -> tuple[float, int]:
    """Run ``one_pass`` (returns slices read) once to warm up, then time a second run."""
    one_pass()
    start = time.perf_counter()
    slices = one_pass()
    return time.perf_counter() - start, slices


def _ray_pass(manifest: Manifest, columns: list[str]) -> int:
    slices = 0
    batches = read_domain(manifest, "ceT1", columns=columns).iter_torch_batches(
        batch_size=BATCH_SIZE, collate_fn=SliceCollate.for_manifest(manifest), prefetch_batches=PREFETCH_BATCHES
    )
    for batch in batches:
        slices += batch["image"].shape[0]
    return slices


def _png_pass(loader: DataLoader) -> int:
    return sum(batch.shape[0] for batch in loader)


def _ingest_figures(train_dir: Path, work: Path) -> tuple[list[Figure], Manifest]:
    figures: list[Figure] = []
    baseline = None
    manifest = None
    for parallel in (1, 2):
        result = run_ingest(
            train_dir, work / f"shards-{parallel}", IngestConfig(image_size=256, max_parallel=parallel), progress=False
        )
        volumes_per_s = result.processed / result.seconds
        slices_per_s = result.processed_slices / result.seconds
        if baseline is None:
            baseline = (volumes_per_s, slices_per_s)
        figures += [
            Figure(f"ingest, {parallel} Ray task(s) at a time", volumes_per_s, "volumes/s", "1 task", baseline[0]),
            Figure(f"ingest, {parallel} Ray task(s) at a time", slices_per_s, "slices/s", "1 task", baseline[1],
                   note=f"{result.processed} volumes, 256 x 256"),
        ]  # fmt: skip
        manifest = result.manifest
    assert manifest is not None
    return figures, manifest


def measure(quick: bool = False) -> list[Figure]:
    """Ingest a phantom cohort twice (1 and 2 tasks), then time both readers over its ceT1 slices."""
    from ray.data import DataContext

    local_ray()
    DataContext.get_current().enable_progress_bars = False
    cases, size, epoch = (2, 64, 200) if quick else (8, 128, EPOCH_SLICES)
    with tempfile.TemporaryDirectory(prefix="tanq-bench-data-") as folder:
        work = Path(folder)
        cohort = generate_cohort(work / "cohort", cases=cases, eval_cases=0, size=size, seed=0)
        figures, manifest = _ingest_figures(cohort.train_dir, work)

        repeat = -(-epoch // manifest.counts()["slices_ceT1"])
        epoch_manifest = _repeated(manifest, repeat)
        ray_seconds, ray_slices = _timed_pass(lambda: _ray_pass(epoch_manifest, ["image"]))
        pair_seconds, pair_slices = _timed_pass(lambda: _ray_pass(epoch_manifest, ["image", "label"]))
        pngs = _write_pngs(manifest, work / "png") * repeat
        loader = DataLoader(PngSlices(pngs), batch_size=BATCH_SIZE, num_workers=2)
        png_seconds, png_slices = _timed_pass(lambda: _png_pass(loader))

    ray_rate, png_rate = ray_slices / ray_seconds, png_slices / png_seconds
    consumption = SLICES_PER_SAMPLE / QS_ATTN_SECONDS_PER_STEP_256
    figures += [
        Figure("Ray Data shards -> torch batches, image", ray_rate, "slices/s", "PNG + DataLoader", png_rate,
               note=f"{ray_slices} slices, batch {BATCH_SIZE}, 256 x 256, float16 -> float32"),
        Figure("Ray Data shards -> torch batches, image + label", pair_slices / pair_seconds, "slices/s",
               "PNG + DataLoader", png_rate, note="label -> int64 as well"),
        Figure("PNG folder + DataLoader (2 workers)", png_rate, "slices/s", note="CUT/QS-Attn data path, 8-bit image"),
        Figure("reader headroom over a CPU training step", ray_rate / consumption, "x",
               note=f"step consumes {consumption:.3f} slices/s (QS-Attn 256 x 256, {QS_ATTN_SECONDS_PER_STEP_256:.0f} s/it)"),
        Figure("step rate the reader feeds with 10x headroom", ray_rate / (10 * SLICES_PER_SAMPLE), "samples/s",
               note="a batch-4 step must take longer than 4 / this"),
    ]  # fmt: skip
    return figures
