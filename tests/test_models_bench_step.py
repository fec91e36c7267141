"""``tanq bench step`` smoke test: every figure is measured and positive."""

from __future__ import annotations

import math

from tanq_ray.bench.report import format_table
from tanq_ray.bench.step import measure


def test_quick_measure_returns_every_figure():
    figures = measure(quick=True)
    names = [f.name for f in figures]
    assert names == [
        "TANQ train step",
        "QS-Attn-equivalent train step",
        "CUT-equivalent train step",
        "CycleGAN train step",
        "target-aware norm overhead",
        "TANQ inference",
        "CycleGAN inference",
        "TANQ / CycleGAN inference",
    ]
    for figure in figures:
        assert math.isfinite(figure.value) and figure.anchor_value is not None
        if figure.unit != "%":
            assert figure.value > 0
    assert "TANQ train step" in format_table("step", figures)
