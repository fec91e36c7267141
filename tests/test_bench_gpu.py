"""``tanq bench gpu`` on the CPU (tiny sizes) and the streamed QS-Attn entropy against the full one."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tanq_ray.bench import BENCHMARKS, gpu
from tanq_ray.bench.report import Figure
from tanq_ray.cli import main
from tanq_ray.models.patches import attention_entropy, qs_global_selection, streamed_attention_entropy


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_streamed_entropy_equals_the_full_one(chunk_rows: int) -> None:
    features = torch.randn(3, 16, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(streamed_attention_entropy(features, chunk_rows), attention_entropy(features))


def test_streamed_selection_keeps_the_same_patches_and_rows() -> None:
    features = torch.randn(2, 8, 6, 6)
    full, streamed = qs_global_selection(features, 10), qs_global_selection(features, 10, chunk_rows=5)
    assert torch.equal(full.indices, streamed.indices)
    torch.testing.assert_close(full.attention, streamed.attention)


def test_streamed_entropy_refuses_empty_chunks() -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        streamed_attention_entropy(torch.zeros(1, 2, 2, 2), 0)


def test_compile_failure_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model: object) -> None:
        raise RuntimeError("backend exploded\nlong trace")

    monkeypatch.setattr(gpu, "compile_networks", broken)
    monkeypatch.setattr(gpu, "VARIANTS", (gpu.Variant("fp32", False), gpu.Variant("compiled", False, compiled=True)))
    monkeypatch.setattr(gpu, "time_step", lambda name, config, variant, sizes, timer: _maybe_compile(variant))
    gpu_timer = SimpleNamespace(device=SimpleNamespace(type="cuda"))  # compilation is attempted on GPUs only
    figures, _ = gpu.step_figures(gpu.TINY, gpu_timer, started=time.perf_counter())  # type: ignore[arg-type]
    failed = [f for f in figures if "compiled" in f.name]
    assert len(failed) == 2 and all(math.isnan(f.value) for f in failed)
    assert failed[0].note == "not measured: RuntimeError: backend exploded"


def _maybe_compile(variant: gpu.Variant) -> tuple[float, float, float]:
    if variant.compiled:
        gpu.compile_networks(object())  # type: ignore[arg-type]
    return 0.5, 10.0, 0.5


def test_capacity_from_measured_steps_matches_the_papers_hours_at_the_papers_rate() -> None:
    # the step times the paper's 72 GPU-hours imply give 72 GPU-hours back
    capacity = gpu.load_capacity()
    assert capacity is not None
    implied = {m: capacity.translator_seconds_per_iteration(m, 4) for m in ("tanq", "cyclegan")}
    (train, _) = gpu.capacity_figures(implied, {"tanq": 0.01, "cyclegan": 0.01}, "test card")
    assert train.value == pytest.approx(72.0)
    assert train.anchor_value == 72.0


def test_bench_gpu_runs_tiny_on_cpu_and_writes_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "gpu" in BENCHMARKS
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    main(["bench", "gpu", "--json", str(out)])
    figures = {f["name"]: f for f in json.loads(out.read_text())["figures"]}
    assert figures["QS-Attn entropy, streamed vs full: max relative error"]["value"] < 1e-5
    assert figures["QS-Attn selection, streamed vs full: same patches"]["value"] == 1.0
    for name in ("tanq", "cyclegan"):
        assert figures[f"{name} train step, bf16 autocast"]["value"] > 0
        assert figures[f"{name} translate"]["value"] > 0
        assert "not measured" in figures[f"{name} train step, bf16 autocast, channels_last, torch.compile"]["note"]
    assert figures["translator GPU-hours, paper configuration"]["anchor_value"] == 72.0
    assert "not measured" in figures["nnUNet 3d_fullres training"]["note"]


def test_not_measured_rows_say_why() -> None:
    row = gpu.not_measured("x", "it/s", "no GPU")
    assert isinstance(row, Figure) and math.isnan(row.value) and row.note == "not measured: no GPU"
