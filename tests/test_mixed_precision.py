"""The translators' steps run under bfloat16 autocast (what ``train.bf16`` does on GPU), here on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from tanq_ray.models.config import CycleGANConfig, TanqConfig
from tanq_ray.models.registry import build_model
from tanq_ray.models.synthetic import synthetic_batch


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("tanq", TanqConfig(ngf=8, ndf=8, n_blocks=2, nce_layers=(0, 4, 8, 12, 13), num_patches=32)),
        ("cyclegan", CycleGANConfig(ngf=8, ndf=8, n_blocks=2)),
    ],
)
def test_a_step_under_bf16_autocast_gives_finite_losses_and_keeps_float32_weights(name: str, config) -> None:
    torch.manual_seed(0)
    model = build_model(name, config)
    before = [p.detach().clone() for p in model.translator.parameters()]
    batch = synthetic_batch(2, 32, seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.step(batch)
    assert losses and all(math.isfinite(value) for value in losses.values())
    after = list(model.translator.parameters())
    assert all(p.dtype == torch.float32 for p in after)
    assert any(not torch.equal(old, new) for old, new in zip(before, after))  # the optimiser stepped
    with torch.autocast("cpu", dtype=torch.bfloat16):
        translated = model.translate(batch["source"], batch["source_label"])
    assert translated.shape == batch["source"].shape and torch.isfinite(translated.float()).all()
