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
}


def load(what: str) -> tuple[str, Callable[..., list[Figure]]]:
    """Title and ``measure`` function of a registered benchmark."""
    title, module = BENCHMARKS[what]
    return title, importlib.import_module(module).measure
