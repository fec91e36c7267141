"""Structure-contrast augmentation: each labelled structure drawn at a random contrast to its surroundings.

Why: the adapted rows train nnUNet on translations, and a translator renders
the VS and the cochlea at its own contrast to their surroundings (CycleGAN
keeps ceT1's bright VS, a short translator schedule a faint cochlea;
docs/learning-on-a-cpu.md section 7). A segmenter that learns one rendering
finds nothing where real hrT2 shows another. Redrawing the contrast of each
labelled structure in the training patches makes shape and position, which
translation preserves, the cue rather than brightness, which it does not.
The paper cites the same idea as appearance augmentation of the regions of
interest (Fgh365, TBA, refs 21 and 34).

Per patch and structure, with probability ``probability``: the structure's
mean is moved so that it lies ``t`` standard deviations of the patch (before
the change) above (``t < 0``: below) the mean of the background within
``ring`` pixels of it, ``t`` drawn uniformly from ``contrast``. Texture inside
the structure is kept and nothing outside it changes: fading the shift over
the border would widen a cochlea one or two pixels across.
nnUNet applies it after the spatial transforms, before noise, blur,
brightness and gamma.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform


def _dilate(mask: torch.Tensor, width: int) -> torch.Tensor:
    """``(C, *spatial)`` float mask, 2 or 3 spatial axes -> its dilation by a ``width`` box, same shape."""
    pool = F.max_pool2d if mask.dim() == 3 else F.max_pool3d
    return pool(mask.unsqueeze(1), width, stride=1, padding=width // 2).squeeze(1)


class StructureContrastTransform(BasicTransform):
    """Redraw each labelled structure's contrast to its surroundings (module docstring).

    Args:
        labels: the label values of the structures (nnUNet's foreground labels).
        contrast: ``(low, high)``: the structure-minus-surroundings mean drawn
            from, in standard deviations of the patch.
        probability: chance that one structure of one patch is redrawn.
        ring: width in pixels of the band around a structure that is its surroundings.
    """

    def __init__(
        self, labels: tuple[int, ...], contrast: tuple[float, float], probability: float = 0.5, ring: int = 2
    ) -> None:
        super().__init__()
        low, high = contrast
        if low > high:
            raise ValueError(f"contrast range ({low}, {high}) must list its lower bound first")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability {probability} must lie in [0, 1]")
        self.labels = tuple(labels)
        self.contrast = (float(low), float(high))
        self.probability = probability
        self.ring = ring

    def get_parameters(self, **data_dict) -> dict:
        low, high = self.contrast
        targets = {}
        for label in self.labels:
            if torch.rand(()).item() < self.probability:
                targets[label] = low + (high - low) * torch.rand(()).item()
        return {"targets": targets}

    def apply(self, data_dict: dict, **params) -> dict:
        image, segmentation = data_dict.get("image"), data_dict.get("segmentation")
        if image is None or segmentation is None or not params["targets"]:
            return data_dict
        data_dict["image"] = self.redraw(image, segmentation[0], params["targets"])
        return data_dict

    def redraw(self, image: torch.Tensor, labels: torch.Tensor, targets: dict[int, float]) -> torch.Tensor:
        """``image (C, *spatial)``, ``labels (*spatial)`` -> the image with each structure in ``targets`` at its contrast."""
        image = image.clone()
        scale = image.std().clamp_min(1e-6)
        background = (labels == 0).to(image.dtype)
        spatial = tuple(range(1, image.dim()))
        for label, target in targets.items():
            inside = (labels == label).to(image.dtype).unsqueeze(0)
            band = (_dilate(inside, 2 * self.ring + 1) - inside) * background
            inside_count, band_count = inside.sum(), band.sum()
            if inside_count == 0 or band_count == 0:
                continue
            structure_mean = (image * inside).sum(dim=spatial) / inside_count
            band_mean = (image * band).sum(dim=spatial) / band_count
            shift = target * scale - (structure_mean - band_mean)  # (C,)
            image += shift.view(-1, *([1] * len(spatial))) * inside
        return image
