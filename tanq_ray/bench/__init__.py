"""``tanq bench <what>``: measurements printed as a table and written as JSON.

Each benchmark is a module with ``measure(quick: bool) -> list[Figure]``;
it prints what it measured next to its anchors and asserts nothing.
"""

from __future__ import annotations

import importlib
from typing import Callable

from tanq_ray.bench.report import Figure

BENCHMARKS: dict[str, tuple[str, str]] = {
    "data": ("Data path: ingest and shard reading", "tanq_ray.bench.data"),
    "step": ("Translator training step and inference", "tanq_ray.bench.step"),
    "train": ("Ray Train: throughput, data stalls, overhead", "tanq_ray.bench.train"),
    "sweep": ("Ray Tune sweep: parallel efficiency", "tanq_ray.bench.sweep"),
    "translate": ("Translate stage: seconds per slice and volume", "tanq_ray.bench.translate"),
    "segment": ("nnUNet on Ray: folds in parallel, pseudo-labelling", "tanq_ray.bench.segment"),
    "gpu": ("The paper configuration on one GPU: steps, QS attention, translation, capacity", "tanq_ray.bench.gpu"),
}


def local_ray() -> None:
    """A local Ray instance on every core, without the dashboard, unless one is running already."""
    import os

    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level="WARNING")


def load(what: str) -> tuple[str, Callable[..., list[Figure]]]:
    """Title and ``measure`` function of a registered benchmark."""
    title, module = BENCHMARKS[what]
    return title, importlib.import_module(module).measure
