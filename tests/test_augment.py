"""Random crops of translator training batches: one offset per slice, shared by a slice and its label."""

from __future__ import annotations

import pytest
import torch

from tanq_ray.config import ConfigError, load_config
from tanq_ray.data.augment import random_crop


def _batch(count: int = 6, size: int = 20) -> dict[str, torch.Tensor]:
    grid = torch.arange(size * size, dtype=torch.float32).reshape(size, size)  # every pixel unique
    image = torch.stack([grid + 1000 * i for i in range(count)]).unsqueeze(1)
    return {"image": image, "label": image[:, 0].long()}


def test_crops_keep_image_and_label_aligned_with_their_own_offsets() -> None:
    batch = _batch()
    cropped = random_crop(batch, 8, torch.Generator().manual_seed(0))
    assert cropped["image"].shape == (6, 1, 8, 8) and cropped["label"].shape == (6, 8, 8)
    assert torch.equal(cropped["image"][:, 0].long(), cropped["label"])
    corners = {int(cropped["image"][i, 0, 0, 0]) - 1000 * i for i in range(6)}
    assert len(corners) > 1  # slices are not all cut at the same place
    for i in range(6):  # each crop is a contiguous window of its own slice
        top, left = divmod(int(cropped["image"][i, 0, 0, 0]) - 1000 * i, 20)
        assert torch.equal(cropped["image"][i], batch["image"][i, :, top : top + 8, left : left + 8])


def test_same_generator_seed_same_crops_and_whole_slices_unchanged() -> None:
    batch = _batch()
    first, second = (random_crop(batch, 12, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(first["image"], second["image"])
    assert torch.equal(random_crop(batch, 20, torch.Generator())["image"], batch["image"])
    with pytest.raises(ValueError, match="does not fit"):
        random_crop(batch, 24, torch.Generator())


def test_crop_size_must_suit_the_generator() -> None:
    assert load_config(None, ["train.crop_size=48"]).train.crop_size == 48
    with pytest.raises(ConfigError, match="multiple of 4"):  # two stride-2 levels
        load_config(None, ["train.crop_size=50"])
