"""The structure-contrast augmentation: what it does to one patch, and where it sits in nnUNet's pipeline."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from tanq_ray.config import SegmentConfig
from tanq_ray.segment.structure_contrast import StructureContrastTransform
from tanq_ray.segment.schedule import FoldSchedule
from tanq_ray.segment.trainer import TanqTrainer, with_structure_appearance


def _patch(spatial: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy patch with a bright 'VS' block (label 1) and a faint 2-pixel 'cochlea' (label 2)."""
    generator = torch.Generator().manual_seed(0)
    image = 0.3 * torch.randn(1, *spatial, generator=generator)
    labels = torch.zeros(spatial)
    vs = (slice(None),) * (len(spatial) - 2) + (slice(8, 16), slice(8, 16))
    cochlea = (slice(None),) * (len(spatial) - 2) + (slice(26, 28), slice(26, 28))
    labels[vs], labels[cochlea] = 1, 2
    image[(0, *vs)] += 2.0
    image[(0, *cochlea)] += 0.1
    return image, labels


def _contrast(image: torch.Tensor, labels: torch.Tensor, label: int, ring: int = 2) -> float:
    """Mean inside the structure minus the mean of the background within ``ring`` pixels of it (numpy, independently)."""
    inside = (labels == label).numpy()
    near = np.zeros_like(inside)
    for offset in np.ndindex(*([2 * ring + 1] * inside.ndim)):
        near |= np.roll(inside, [o - ring for o in offset], axis=tuple(range(inside.ndim)))
    band = near & (labels == 0).numpy()
    values = image[0].numpy()
    return float(values[inside].mean() - values[band].mean())


@pytest.mark.parametrize("spatial", [(40, 40), (3, 40, 40)], ids=["2d", "3d"])
def test_each_structure_lands_at_its_drawn_contrast_with_its_texture(spatial: tuple[int, ...]) -> None:
    image, labels = _patch(spatial)
    targets = {1: -0.5, 2: 1.5}
    out = StructureContrastTransform((1, 2), (-1.0, 2.0)).redraw(image, labels, targets)
    scale = float(image.std())
    for label, target in targets.items():
        assert _contrast(out, labels, label) == pytest.approx(target * scale, abs=1e-4)
        inside = labels == label
        texture_before = image[0][inside] - image[0][inside].mean()
        texture_after = out[0][inside] - out[0][inside].mean()
        assert torch.allclose(texture_before, texture_after, atol=1e-5)
    assert torch.equal(out[0][labels == 0], image[0][labels == 0])  # the surroundings keep their values


def test_a_structure_not_drawn_or_not_in_the_patch_is_left_alone() -> None:
    image, labels = _patch((40, 40))
    out = StructureContrastTransform((1, 2), (0.0, 1.0)).redraw(image, labels, {1: 1.0, 3: 2.0})
    assert torch.equal(out[0][labels == 2], image[0][labels == 2])
    never = StructureContrastTransform((1, 2), (0.0, 1.0), probability=0.0)
    unchanged = never(image=image.clone(), segmentation=labels[None].clone())["image"]
    assert torch.equal(unchanged, image)


@pytest.mark.parametrize("probability", [0.5, 1.0])
def test_drawn_contrasts_stay_in_the_range_and_each_structure_is_drawn_at_the_given_rate(probability: float) -> None:
    torch.manual_seed(0)
    transform = StructureContrastTransform((1, 2), (-0.5, 2.0), probability)
    draws = [transform.get_parameters()["targets"] for _ in range(2000)]
    for label in (1, 2):
        values = [targets[label] for targets in draws if label in targets]
        assert abs(len(values) / len(draws) - probability) < 0.05
        assert -0.5 <= min(values) and max(values) <= 2.0 and max(values) - min(values) > 2.0


def test_the_trainer_redraws_at_the_schedules_rate(tmp_path: Path) -> None:
    schedule = FoldSchedule.from_settings(
        SegmentConfig(structure_contrast=(0.2, 2.0), structure_contrast_probability=1.0, foreground_oversampling=0.75)
    )
    trainer = SimpleNamespace(
        label_manager=SimpleNamespace(foreground_labels=[1, 2]), was_initialized=False, logger=MetaLogger(str(tmp_path), False)
    )
    TanqTrainer.configure(trainer, schedule)  # as each fold task does, on a stand-in for nnUNet's trainer
    pipeline = TanqTrainer.get_training_transforms(
        trainer, np.array([40, 40]), (-np.pi, np.pi), None, (0, 1), do_dummy_2d_data_aug=False, foreground_labels=(1, 2)
    )
    (redraw,) = [step for step in pipeline.transforms if isinstance(step, StructureContrastTransform)]
    assert redraw.contrast == (0.2, 2.0) and redraw.probability == 1.0


def test_nnunet_pipeline_gets_the_transform_after_its_spatial_step_and_runs() -> None:
    kwargs = dict(
        patch_size=np.array([40, 40]), rotation_for_DA=(-np.pi, np.pi), deep_supervision_scales=None,
        mirror_axes=(0, 1), do_dummy_2d_data_aug=False, foreground_labels=(1, 2),
    )  # fmt: skip
    plain = nnUNetTrainer.get_training_transforms(**kwargs)
    augmented = with_structure_appearance(
        nnUNetTrainer.get_training_transforms(**kwargs), [StructureContrastTransform((1, 2), (-0.5, 2.0))]
    )
    names = [type(step).__name__ for step in augmented.transforms]
    assert names.index("StructureContrastTransform") == names.index("SpatialTransform") + 1
    assert len(augmented.transforms) == len(plain.transforms) + 1
    image, labels = _patch((40, 40))
    out = augmented(image=image, segmentation=labels[None].to(torch.int16))
    assert out["image"].shape == (1, 40, 40) and torch.isfinite(out["image"]).all()


def test_config_refuses_a_reversed_range() -> None:
    with pytest.raises(ValueError, match="structure_contrast"):
        SegmentConfig(structure_contrast=(2.0, -0.5))
    assert SegmentConfig(structure_contrast=(-0.5, 2.0)).structure_contrast == (-0.5, 2.0)
