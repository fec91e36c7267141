"""Translator training augmentation: resize, random crops and flips, one draw per slice, shared by a slice and its label."""

from __future__ import annotations

import pytest
import torch

from tanq_ray.config import ConfigError, load_config
from tanq_ray.data.augment import random_crop, random_flip, resize


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


def test_resize_keeps_labels_as_labels_and_images_smooth() -> None:
    label = torch.zeros(2, 8, 8, dtype=torch.long)
    label[:, 2:4, 5] = 2  # a one-pixel-wide structure
    batch = {"image": torch.linspace(0, 1, 8).repeat(2, 1, 8, 1), "label": label}
    resized = resize(batch, 9)  # the public 256 -> 286 ratio, about 1.12
    assert resized["image"].shape == (2, 1, 9, 9) and resized["label"].shape == (2, 9, 9)
    assert resized["label"].dtype == torch.long and set(resized["label"].unique().tolist()) == {0, 2}
    assert (resized["label"] == 2).sum() >= (label == 2).sum()  # upsampling keeps every labelled pixel
    assert torch.all(resized["image"].diff(dim=-1) >= 0)  # a left-to-right ramp stays a ramp


def test_flips_move_a_slice_and_its_label_together() -> None:
    batch = _batch(count=32)
    flipped = random_flip(batch, torch.Generator().manual_seed(0))
    assert torch.equal(flipped["image"][:, 0].long(), flipped["label"])
    mirrored = [torch.equal(flipped["image"][i], batch["image"][i].flip(-1)) for i in range(32)]
    assert 4 < sum(mirrored) < 28  # about half, each slice drawn on its own
    kept = [i for i in range(32) if not mirrored[i]]
    assert all(torch.equal(flipped["image"][i], batch["image"][i]) for i in kept)


def test_a_resize_needs_a_crop_that_fits_it() -> None:
    assert load_config(None, ["train.load_size=286", "train.crop_size=256"]).train.load_size == 286
    with pytest.raises(ConfigError, match="load_size"):
        load_config(None, ["train.load_size=240", "train.crop_size=256"])
    with pytest.raises(ConfigError, match="load_size"):
        load_config(None, ["train.load_size=286"])
