"""``tanq bench step``: training-step and inference time of the translators on this machine's CPU.

Training: seconds per iteration (one D + G update) at 128 x 128, batch 1,
ResNet-9, ngf 64, one channel, 256 patches, QS global on the last two NCE
layers, ``torch.set_num_threads(2)``, against the public implementations'
times quoted in DESIGN.md for exactly these settings on a 2-core CPU: the
public QS-Attn (anti-aliased, its default) 1.46 s and CycleGAN 1.44 s,
measured side by side on 2026-11-28; CUT 1.5 s from an earlier, noisier
measurement (not re-measured). The same code runs the
QS-Attn- and CUT-equivalent configs, so the target-aware norm's overhead is
the TANQ step against the same model with instance norms. Inference: seconds
per 256 x 256 slice through the translator alone (paper, on an RTX 3090:
TANQ 0.0669 s, CycleGAN 0.0043 s). Every time is a median after warm-up.
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Callable

import torch

from tanq_ray.bench.report import Figure
from tanq_ray.models.config import CycleGANConfig, TanqConfig
from tanq_ray.models.registry import build_model
from tanq_ray.models.synthetic import synthetic_batch

TRAIN_SIZE, INFER_SIZE, THREADS = 128, 256, 2
QUOTED_S_PER_IT = {"QS-Attn": 1.46, "CUT": 1.5, "CycleGAN": 1.44}  # DESIGN.md, public code, 2-core CPU (see above)
PAPER_GPU_S_PER_SLICE = {"TANQ": 0.0669, "CycleGAN": 0.0043}
NORM_OVERHEAD_GOAL_PCT = 15.0
INFERENCE_RATIO_GOAL = 1.5

_IN_NORMS = {"encoder_norm": "in", "decoder_norm": "in"}
_CONFIGS: dict[str, tuple[str, TanqConfig | CycleGANConfig]] = {
    "TANQ": ("tanq", TanqConfig()),
    "TANQ with IN norms": ("tanq", TanqConfig(**_IN_NORMS)),
    "QS-Attn-equivalent": ("tanq", TanqConfig(**_IN_NORMS, segdecoder=False)),
    "CUT-equivalent": ("tanq", TanqConfig(**_IN_NORMS, segdecoder=False, patch_select="random")),
    "CycleGAN": ("cyclegan", CycleGANConfig()),
}


def interleaved_medians(calls: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, float]:
    """Median wall time per call after ``warmup`` untimed calls each.

    Rounds interleave the calls (a, b, c, a, b, c, ...), so a change of
    background load on a shared machine affects every call alike.
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(repeats):
        for label, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def measure(quick: bool = False) -> list[Figure]:
    """Time the translators; ``quick`` = one warm-up and one timed iteration each (smoke test)."""
    warmup, repeats = (1, 1) if quick else (2, 10)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        torch.manual_seed(0)
        models = {label: build_model(name, config) for label, (name, config) in _CONFIGS.items()}
        train_batch = synthetic_batch(1, TRAIN_SIZE, seed=0)
        step = interleaved_medians(
            {label: partial(model.step, train_batch) for label, model in models.items()}, warmup, repeats
        )
        infer_batch = synthetic_batch(1, INFER_SIZE, seed=1)
        infer = interleaved_medians(
            {
                "TANQ": partial(models["TANQ"].translate, infer_batch["source"], infer_batch["source_label"]),
                "CycleGAN": partial(models["CycleGAN"].translate, infer_batch["source"]),
            },
            warmup,
            3 * repeats,
        )
    finally:
        torch.set_num_threads(threads)

    how = f"median of {repeats} after {warmup} warm-up, {THREADS} threads"
    train_note = f"{TRAIN_SIZE}x{TRAIN_SIZE}, batch 1, ResNet-9, ngf 64; {how}"
    same_code = "TANQ code, IN norms, no SegDecoder"
    overhead = 100.0 * (step["TANQ"] / step["TANQ with IN norms"] - 1.0)
    return [
        Figure(
            "TANQ train step", step["TANQ"], "s/it", "public QS-Attn (quoted)", QUOTED_S_PER_IT["QS-Attn"], train_note
        ),
        Figure(
            "QS-Attn-equivalent train step", step["QS-Attn-equivalent"], "s/it",
            "public QS-Attn (quoted)", QUOTED_S_PER_IT["QS-Attn"], same_code,
        ),
        Figure(
            "CUT-equivalent train step", step["CUT-equivalent"], "s/it",
            "public CUT (quoted)", QUOTED_S_PER_IT["CUT"], f"{same_code}, random patches",
        ),
        Figure(
            "CycleGAN train step", step["CycleGAN"], "s/it", "public CycleGAN (quoted)", QUOTED_S_PER_IT["CycleGAN"],
            train_note,
        ),
        Figure(
            "target-aware norm overhead", overhead, "%", "goal", NORM_OVERHEAD_GOAL_PCT,
            f"TANQ step vs the same model with IN norms ({step['TANQ with IN norms']:.3g} s/it)",
        ),
        Figure(
            "TANQ inference", infer["TANQ"], "s/slice", "paper, RTX 3090", PAPER_GPU_S_PER_SLICE["TANQ"],
            f"{INFER_SIZE}x{INFER_SIZE}, with masks, CPU; median of {3 * repeats} after {warmup} warm-up",
        ),
        Figure(
            "CycleGAN inference", infer["CycleGAN"], "s/slice", "paper, RTX 3090", PAPER_GPU_S_PER_SLICE["CycleGAN"],
            f"{INFER_SIZE}x{INFER_SIZE}, CPU",
        ),
        Figure(
            "TANQ / CycleGAN inference", infer["TANQ"] / infer["CycleGAN"], "x", "goal", INFERENCE_RATIO_GOAL,
            "same CPU, same run",
        ),
    ]
