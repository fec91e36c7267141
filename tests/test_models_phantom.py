"""TANQ on phantom slices (the ingest geometry, no Ray): losses fall and the SegDecoder learns the VS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tanq_ray.data.geometry import plan_geometry, volume_to_slices
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.data.volume import load_volume
from tanq_ray.models.config import OptimConfig, TanqConfig
from tanq_ray.models.registry import build_model

SIZE = 64


def phantom_slices(folder: Path) -> dict[str, torch.Tensor]:
    """ceT1 slices that show the VS, with labels, and the middle hrT2 slices, all 64 x 64."""
    cohort = generate_cohort(folder, cases=2, eval_cases=0, size=96, seed=3)
    sources, labels, targets = [], [], []
    for case in cohort.labelled_cases:
        image = load_volume(cohort.train_dir / f"{case}_ceT1.nii.gz")
        label = load_volume(cohort.train_dir / f"{case}_Label.nii.gz", is_label=True)
        geometry = plan_geometry(image, (0.41, 0.41, 1.5), 256, SIZE, (0.5, 99.5))
        cut, cut_label = volume_to_slices(image.data, geometry, is_label=False), volume_to_slices(label.data, geometry, is_label=True)
        keep = (cut_label == 1).any(axis=(1, 2))
        sources.append(cut[keep])
        labels.append(cut_label[keep])
    for case in cohort.unlabelled_cases:
        image = load_volume(cohort.train_dir / f"{case}_hrT2.nii.gz")
        geometry = plan_geometry(image, (0.41, 0.41, 1.5), 256, SIZE, (0.5, 99.5))
        cut = volume_to_slices(image.data, geometry, is_label=False)
        targets.append(cut[len(cut) // 3 : 2 * len(cut) // 3])
    return {
        "source": torch.from_numpy(np.concatenate(sources)).unsqueeze(1),
        "source_label": torch.from_numpy(np.concatenate(labels)).long(),
        "target": torch.from_numpy(np.concatenate(targets)).unsqueeze(1),
    }


@pytest.mark.slow
def test_tanq_on_phantom_slices_reduces_nce_and_learns_the_vs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    slices = phantom_slices(tmp_path / "cohort")
    n_source, n_target = len(slices["source"]), len(slices["target"])
    assert n_source >= 8 and n_target >= 8
    config = TanqConfig(ngf=16, ndf=16, n_blocks=3, nce_layers=(0, 4, 8, 13, 14), num_patches=64, optim=OptimConfig(lr=1e-3))
    model = build_model("tanq", config)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(300):
        s = torch.randint(n_source, (4,), generator=generator)
        t = torch.randint(n_target, (4,), generator=generator)
        history.append(model.step({"source": slices["source"][s], "source_label": slices["source_label"][s], "target": slices["target"][t]}))
    first, last = history[:20], history[-20:]
    for key in ("nce_x", "nce_y"):
        assert np.mean([h[key] for h in last]) < 0.8 * np.mean([h[key] for h in first]), key
    prediction = model.segment(slices["source"], slices["source_label"])
    truth = slices["source_label"] == 1
    dice = float(2 * ((prediction == 1) & truth).sum() / ((prediction == 1).sum() + truth.sum()))
    chance = float(truth.float().mean())  # Dice of a random guess with the right VS share
    print(f"VS Dice {dice:.3f} (chance {chance:.4f}); " + ", ".join(f"{k} {np.mean([h[k] for h in first]):.3f} -> {np.mean([h[k] for h in last]):.3f}" for k in ("nce_x", "nce_y", "seg")))
    assert dice > max(0.5, 10 * chance), (dice, chance)
