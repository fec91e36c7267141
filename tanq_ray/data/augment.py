"""Random crops of translator training batches (the public CycleGAN/CUT data path trains on random crops).

Translators are fully convolutional: trained on ``crop`` x ``crop`` pieces of
the slices, they translate whole slices. A crop costs ``(crop / size)^2`` of a
whole-slice step, so a CPU budget buys more steps. Each slice gets its own
offset; a ceT1 slice and its label share it, so the target-aware norms see the
label under the same pixels.
"""

from __future__ import annotations

import torch


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
