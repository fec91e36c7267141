"""Augmentation of translator training batches, as the public CycleGAN/CUT data path does it.

That path resizes each image to 286 pixels, cuts a random 256 crop and flips
it left-right at random (``--preprocess resize_and_crop``, ``--no_flip`` off).
Here, in that order and each optional (``train.load_size``, ``train.crop_size``,
``train.flip``):

- :func:`resize`: every slice to ``size`` x ``size`` (bilinear; labels nearest);
- :func:`random_crop`: translators are fully convolutional: trained on
  ``crop`` x ``crop`` pieces of the slices, they translate whole slices. A crop
  costs ``(crop / size)^2`` of a whole-slice step, so a CPU budget buys more
  steps;
- :func:`random_flip`: left-right, half of the slices.

Each slice gets its own offset and flip; a ceT1 slice and its label share
them, so the target-aware norms see the label under the same pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(batch: dict[str, torch.Tensor], crop: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``{"image": (B, 1, H, W)[, "label": (B, H, W)]}`` -> the same keys cropped to ``(crop, crop)`` at random offsets."""
    height, width = batch["image"].shape[-2:]
    if crop > height or crop > width:
        raise ValueError(f"crop {crop} does not fit slices of {height} x {width}")
    count = batch["image"].shape[0]
    tops = torch.randint(0, height - crop + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(0, width - crop + 1, (count,), generator=generator).tolist()
    return {
        key: torch.stack([value[i, ..., top : top + crop, left : left + crop] for i, (top, left) in enumerate(zip(tops, lefts))])
        for key, value in batch.items()
    }


def resize(batch: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """``{"image": (B, 1, H, W)[, "label": (B, H, W)]}`` -> the same keys at ``(size, size)``: images bilinear, labels nearest."""
    resized = {"image": F.interpolate(batch["image"], size=(size, size), mode="bilinear", align_corners=False)}
    if "label" in batch:
        label = F.interpolate(batch["label"][:, None].float(), size=(size, size), mode="nearest")
        resized["label"] = label[:, 0].to(batch["label"].dtype)
    return resized


def random_flip(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The same keys with each slice flipped left-right (last axis) with probability 1/2, a slice and its label alike."""
    flipped = torch.rand(batch["image"].shape[0], generator=generator) < 0.5
    return {key: torch.where(flipped.view(-1, *[1] * (value.ndim - 1)), value.flip(-1), value) for key, value in batch.items()}
