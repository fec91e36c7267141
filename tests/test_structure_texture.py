"""The VS-texture augmentation: what it does to one patch, and where it sits in nnUNet's pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from tanq_ray.config import SegmentConfig
from tanq_ray.segment.structure_contrast import StructureContrastTransform
from tanq_ray.segment.structure_texture import StructureTextureTransform, smooth_noise
from tanq_ray.segment.trainer import with_structure_appearance


def _patch(spatial: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A patch with a flat 'VS' block (label 1) and a 2-pixel 'cochlea' (label 2) on a noisy background."""
    generator = torch.Generator().manual_seed(0)
    image = 0.3 * torch.randn(1, *spatial, generator=generator)
    labels = torch.zeros(spatial)
    vs = (slice(None),) * (len(spatial) - 2) + (slice(8, 24), slice(8, 24))
    cochlea = (slice(None),) * (len(spatial) - 2) + (slice(30, 32), slice(30, 32))
    labels[vs], labels[cochlea] = 1, 2
    image[(0, *vs)] = 2.0
    image[(0, *cochlea)] = 1.0
    return image, labels


@pytest.mark.parametrize("spatial", [(40, 40), (3, 40, 40)], ids=["2d", "3d"])
def test_the_texture_lands_inside_the_vs_only_at_its_strength(spatial: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    image, labels = _patch(spatial)
    out = StructureTextureTransform(1, (0.0, 1.0)).texture(image, labels, amplitude=0.5, sigma=1.5)
    added = (out - image)[0]
    assert torch.equal(added[labels != 1], torch.zeros_like(added[labels != 1]))  # cochlea and surroundings unchanged
    inside = added[labels == 1]
    # the field has unit std over the patch; the VS holds a quarter of it, so its share of the std is near, not at, 0.5
    assert 0.25 * float(image.std()) < float(inside.std()) < 0.75 * float(image.std())
    assert abs(float(inside.mean())) < 0.5 * float(inside.std()) + 0.1


def test_the_texture_is_smooth_at_its_scale() -> None:
    torch.manual_seed(0)
    fine, coarse = smooth_noise((64, 64), 0.5), smooth_noise((64, 64), 3.0)
    for field in (fine, coarse):
        assert float(field.mean()) == pytest.approx(0.0, abs=1e-5) and float(field.std()) == pytest.approx(1.0, abs=1e-4)
    neighbour = lambda field: float((field[1:] - field[:-1]).abs().mean())  # noqa: E731
    assert neighbour(coarse) < 0.5 * neighbour(fine)


def test_a_patch_without_a_vs_or_not_drawn_is_left_alone() -> None:
    image, labels = _patch((40, 40))
    no_vs = torch.where(labels == 1, torch.zeros_like(labels), labels)
    assert torch.equal(StructureTextureTransform(1, (0.5, 0.5)).texture(image, no_vs, 0.5, 1.0), image)
    never = StructureTextureTransform(1, (0.5, 1.0), probability=0.0)
    assert torch.equal(never(image=image.clone(), segmentation=labels[None].clone())["image"], image)


def test_drawn_strengths_and_scales_stay_in_their_ranges_about_half_the_time() -> None:
    torch.manual_seed(0)
    transform = StructureTextureTransform(1, (0.1, 0.6), scale=(1.0, 3.0))
    draws = [transform.get_parameters() for _ in range(2000)]
    drawn = [d for d in draws if d["amplitude"] is not None]
    assert 0.45 < len(drawn) / len(draws) < 0.55
    amplitudes, sigmas = [d["amplitude"] for d in drawn], [d["sigma"] for d in drawn]
    assert 0.1 <= min(amplitudes) and max(amplitudes) <= 0.6 and max(amplitudes) - min(amplitudes) > 0.45
    assert 1.0 <= min(sigmas) and max(sigmas) <= 3.0


def test_nnunet_pipeline_gets_contrast_then_texture_after_its_spatial_step_and_runs() -> None:
    kwargs = dict(
        patch_size=np.array([40, 40]), rotation_for_DA=(-np.pi, np.pi), deep_supervision_scales=None,
        mirror_axes=(0, 1), do_dummy_2d_data_aug=False, foreground_labels=(1, 2),
    )  # fmt: skip
    steps = [StructureContrastTransform((1, 2), (-0.5, 2.0)), StructureTextureTransform(1, (0.0, 0.4), probability=1.0)]
    augmented = with_structure_appearance(nnUNetTrainer.get_training_transforms(**kwargs), steps)
    names = [type(step).__name__ for step in augmented.transforms]
    spatial = names.index("SpatialTransform")
    assert names[spatial + 1 : spatial + 3] == ["StructureContrastTransform", "StructureTextureTransform"]
    image, labels = _patch((40, 40))
    out = augmented(image=image, segmentation=labels[None].to(torch.int16))
    assert out["image"].shape == (1, 40, 40) and torch.isfinite(out["image"]).all()


def test_bad_ranges_are_refused_with_the_key_named() -> None:
    with pytest.raises(ValueError, match="vs_texture"):
        SegmentConfig(vs_texture=(0.6, 0.2))
    with pytest.raises(ValueError, match="vs_texture"):
        SegmentConfig(vs_texture=(-0.1, 0.2))
    assert SegmentConfig(vs_texture=(0.0, 0.4)).vs_texture == (0.0, 0.4)
    with pytest.raises(ValueError, match="scale"):
        StructureTextureTransform(1, (0.0, 0.4), scale=(0.0, 2.0))
