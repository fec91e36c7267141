"""``tanq bench translate``: seconds per slice and per volume of the translate stage, tiny and paper-size generators.

A phantom cohort is ingested at 256 x 256 (the paper's slice size) and each
untrained generator export (speed does not depend on the weights) translates
it alone through :func:`tanq_ray.translate.translate_cohort`, on this machine's
default actor pool. Stage figures include everything the stage does: the
generator check on the driver, actor start-up, reading shards, writing
volumes. The generator alone is timed too: ``translate`` on 16 of the same
slices in this process, with the one thread a CPU actor gets. The anchors are
the paper's inference times per 2-D slice on a GPU (TANQ 0.0669 s,
CycleGAN 0.0043 s). ``quick`` ingests one case at 64 x 64: a smoke test.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tanq_ray.bench import local_ray
from tanq_ray.bench.report import Figure
from tanq_ray.config import CONFIG_DIR, IngestConfig, load_config
from tanq_ray.data.ingest import run_ingest
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.data.shards import Manifest, tensor_column
from tanq_ray.models.config import CycleGANConfig, TanqConfig
from tanq_ray.models.registry import build_model
from tanq_ray.train.export import export_generator, load_translator
from tanq_ray.translate import translate_cohort

PAPER_SECONDS_PER_SLICE = {"tanq": 0.0669, "cyclegan": 0.0043}  # paper, inference per 2-D slice on a GPU
MODEL_TITLES = {"tanq": "TANQ", "cyclegan": "CycleGAN"}
DIRECT_SLICES = 16


def _generator_sizes() -> dict[str, tuple[str, dict[str, TanqConfig | CycleGANConfig]]]:
    """Size key -> (description, model name -> config): the tiny config's networks and the paper's."""
    tiny = load_config(CONFIG_DIR / "tiny.yaml").models
    tiny_models: dict[str, TanqConfig | CycleGANConfig] = {"tanq": tiny.tanq, "cyclegan": tiny.cyclegan}
    return {
        "tiny": (f"tiny (ngf {tiny.tanq.ngf}, {tiny.tanq.n_blocks} blocks)", tiny_models),
        "paper": ("paper-size (ngf 64, 9 blocks)", {"tanq": TanqConfig(), "cyclegan": CycleGANConfig()}),
    }


def _source_slices(manifest: Manifest, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` ceT1 slices: images ``(N, 1, S, S)`` float32 and labels ``(N, S, S)`` int64."""
    table = pa.concat_tables([pq.read_table(path) for path in manifest.shard_paths("ceT1")]).slice(0, count)
    images, labels = tensor_column(table, "image"), tensor_column(table, "label")
    return torch.from_numpy(images).float()[:, None], torch.from_numpy(labels).long()


def _generator_seconds_per_slice(generator: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    """``translate`` on the slices as one batch, one thread, after a one-slice warm-up."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_translator(generator)
        with torch.inference_mode():
            model.translate(images[:1], labels[:1])
            start = time.perf_counter()
            model.translate(images, labels)
        return (time.perf_counter() - start) / len(images)
    finally:
        torch.set_num_threads(threads)


def measure(quick: bool = False) -> list[Figure]:
    """Translate a phantom cohort with each generator; report seconds per slice and per volume."""
    local_ray()
    cases, image_size = (1, 64) if quick else (2, 256)
    figures = []
    with tempfile.TemporaryDirectory(prefix="tanq-bench-translate-") as folder:
        root = Path(folder)
        cohort = generate_cohort(root / "cohort", cases=cases, eval_cases=0, size=96, seed=0)
        settings = IngestConfig(image_size=image_size)
        manifest = run_ingest(cohort.train_dir, root / "ingest", settings, progress=False).manifest
        images, labels = _source_slices(manifest, 4 if quick else DIRECT_SLICES)
        for size, (description, configs) in _generator_sizes().items():
            for name, config in configs.items():
                torch.manual_seed(0)
                generator = export_generator(build_model(name, config), root / "generators" / f"{size}-{name}")
                result = translate_cohort(root / "ingest", {name: generator}, root / "out" / size)
                direct = _generator_seconds_per_slice(generator, images, labels)
                title, anchor = f"{MODEL_TITLES[name]} {description}", PAPER_SECONDS_PER_SLICE[name]
                where = f"{image_size} x {image_size}, {result.slices} slices in {result.volumes} volumes"
                figures += [
                    Figure(f"{title}: translate stage per slice", result.seconds / result.slices, "s",
                           "paper (GPU)", anchor, note=f"{where}, all stage work included"),
                    Figure(f"{title}: translate stage per volume", result.seconds / result.volumes, "s",
                           note=f"{result.slices / result.volumes:.0f} slices per volume"),
                    Figure(f"{title}: generator alone per slice", direct, "s", "paper (GPU)", anchor,
                           note=f"batch of {len(images)}, 1 thread, in process"),
                ]  # fmt: skip
    return figures
