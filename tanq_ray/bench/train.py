"""``tanq bench train``: Ray Train throughput with 1 and 2 workers, data stalls, and Ray's overhead.

A phantom cohort is ingested at 64 x 64 and TANQ with the tiny config's
networks (ngf 16, 3 residual blocks, 64 patches) trains for 3 epochs, batch 4;
figures come from the last epoch. The anchor for the overhead is the same
model's ``step`` called in a plain loop, in this process, on the same slices
read straight from the shards, with the thread count of one Ray worker.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from tanq_ray.bench import local_ray
from tanq_ray.bench.report import Figure
from tanq_ray.config import CONFIG_DIR, Config, load_config
from tanq_ray.data.ingest import run_ingest
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.data.shards import Manifest, tensor_column
from tanq_ray.models.registry import build_model
from tanq_ray.train.launcher import launch_training

EPOCHS = 3


def _config(root: Path, workers: int, epochs: int) -> Config:
    return load_config(
        CONFIG_DIR / "tiny.yaml",
        [
            f"output_dir={root / f'workers-{workers}'}", f"models.tanq.epochs={epochs}", f"train.num_workers={workers}",
            f"train.cpus_per_worker={1.0 if workers == 1 else 0.5}", "train.visual_every=1000",
        ],
    )  # fmt: skip


def _plain_loop_rate(manifest: Manifest, config: Config, steps: int) -> float:
    """Slices/s of ``model.step`` in a plain loop over in-memory slices, 1 thread, after one warm-up pass."""
    def load(domain: str, column: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([tensor_column(pq.read_table(p), column) for p in manifest.shard_paths(domain)]))

    source, label, target = load("ceT1", "image").float()[:, None], load("ceT1", "label").long(), load("hrT2", "image").float()[:, None]
    batch = config.train.batch_size
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("tanq", config.models.tanq)

    def run(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            s = torch.arange(i * batch, (i + 1) * batch) % len(source)
            t = torch.arange(i * batch, (i + 1) * batch) % len(target)
            model.step({"source": source[s], "source_label": label[s], "target": target[t]})
        return n * batch / (time.perf_counter() - start)

    run(min(steps, 5))
    return run(steps)


def measure(quick: bool = False) -> list[Figure]:
    """Train with 1 and 2 Ray workers and in a plain loop; report throughput, stalls and overhead."""
    local_ray()
    epochs = 1 if quick else EPOCHS
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="tanq-bench-train-") as folder:
        root = Path(folder)
        cohort = generate_cohort(root / "cohort", cases=2 if quick else 4, eval_cases=0, size=64 if quick else 96, seed=0)
        figures, rates = [], {}
        for workers in (1, 2):
            config = _config(root, workers, epochs)
            manifest = run_ingest(cohort.train_dir, config.stage_dir("ingest"), config.ingest, progress=False).manifest
            metrics = launch_training(config, None).metrics
            rates[workers] = metrics["slices_per_second"]
            figures += [
                Figure(f"Ray Train, {workers} worker(s)", rates[workers], "slices/s", "1 worker", rates[1],
                       note=f"TANQ tiny nets, 64 x 64, batch {config.train.batch_size}/worker, epoch {epochs - 1}"),
                Figure(f"data stall, {workers} worker(s)", 100 * metrics["stall_fraction"], "% of epoch",
                       note="time a worker waits for its next batch"),
            ]  # fmt: skip
        steps = int(manifest.counts()["slices_ceT1"] // config.train.batch_size)
        plain = _plain_loop_rate(manifest, _config(root, 1, epochs), steps)
        torch.set_num_threads(threads)
    figures += [
        Figure("plain loop, same model and slices, 1 thread", plain, "slices/s", note=f"{steps} steps"),
        Figure("Ray Train overhead (1 worker vs plain loop)", 100 * (1 - rates[1] / plain), "%", "goal", 10.0),
    ]
    return figures
