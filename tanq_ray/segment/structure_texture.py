"""VS-texture augmentation: a smooth random texture added inside the VS of a training patch.

Why: a translator on a short schedule fills a large VS smoothly (TANQ's
pseudo-hrT2: neighbouring voxels inside a large VS differ by 0.04-0.12 in
z-score, real hrT2 by 0.11-0.17; the 10th percentile of the VS lies 0.1-0.3
below its mean, on real hrT2 about 0.3 below), while a real VS is mottled. A
segmenter trained on the smooth fill takes a real VS's darker patches for
brain: every model trained on the translations drew a large real VS at a
fraction of its size, and smoothing only the inside of those real VS raised
the softmax the same model gave them from 0.05-0.27 to 0.26-0.69
(docs/learning-on-a-cpu.md section 25). Adding texture to the VS in training
makes its inside a poor cue, so its outline and position have to carry the
decision. The paper's related work does the same kind of thing with
appearance augmentation of the regions of interest (refs 21 and 34).
Measured, it drew more of the large VS on one phantom cohort's translations
and not on another's, so the tiny configuration leaves it off (section 25).

Only the VS gets it: the cochlea is one or two pixels wide, so a texture on
its scale is a change of its brightness, which structure-contrast
augmentation (:mod:`tanq_ray.segment.structure_contrast`) already draws, and
noise inside it erased it in a probe.

Per patch, with probability ``probability``: white noise blurred by a Gaussian
of ``sigma`` pixels drawn from ``scale``, scaled to unit standard deviation,
times ``a`` standard deviations of the patch, ``a`` drawn from ``amplitude``,
is added to the VS voxels; nothing outside the VS changes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform


def smooth_noise(shape: tuple[int, ...], sigma: float) -> torch.Tensor:
    """White noise of ``shape`` (2 or 3 spatial axes) blurred by a Gaussian of ``sigma`` pixels along each axis,
    scaled to zero mean and unit standard deviation."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    field = torch.randn(shape)
    for axis in range(field.dim()):
        moved = field.movedim(axis, -1)
        rows = moved.reshape(-1, 1, moved.shape[-1])
        blurred = F.conv1d(F.pad(rows, (radius, radius), mode="replicate"), kernel)
        field = blurred.reshape(moved.shape).movedim(-1, axis)
    return (field - field.mean()) / field.std().clamp_min(1e-6)


class StructureTextureTransform(BasicTransform):
    """Add a smooth random texture inside one labelled structure (module docstring).

    Args:
        label: the label value of the structure (the VS).
        amplitude: ``(low, high)``: the texture's standard deviation drawn from,
            in standard deviations of the patch.
        scale: ``(low, high)``: the Gaussian blur of the noise drawn from, in pixels.
        probability: chance that a patch gets a texture.
    """

    def __init__(
        self,
        label: int,
        amplitude: tuple[float, float],
        scale: tuple[float, float] = (1.0, 3.0),
        probability: float = 0.5,
    ) -> None:
        super().__init__()
        for name, (low, high) in (("amplitude", amplitude), ("scale", scale)):
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} range ({low}, {high}) must be 0 <= low <= high")
        if scale[0] <= 0:
            raise ValueError(f"scale range {scale} must be above 0 pixels")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability {probability} must lie in [0, 1]")
        self.label = label
        self.amplitude = (float(amplitude[0]), float(amplitude[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.probability = probability

    def get_parameters(self, **data_dict) -> dict:
        if torch.rand(()).item() >= self.probability:
            return {"amplitude": None}
        (a_low, a_high), (s_low, s_high) = self.amplitude, self.scale
        return {
            "amplitude": a_low + (a_high - a_low) * torch.rand(()).item(),
            "sigma": s_low + (s_high - s_low) * torch.rand(()).item(),
        }

    def apply(self, data_dict: dict, **params) -> dict:
        image, segmentation = data_dict.get("image"), data_dict.get("segmentation")
        if image is None or segmentation is None or params["amplitude"] is None:
            return data_dict
        data_dict["image"] = self.texture(image, segmentation[0], params["amplitude"], params["sigma"])
        return data_dict

    def texture(self, image: torch.Tensor, labels: torch.Tensor, amplitude: float, sigma: float) -> torch.Tensor:
        """``image (C, *spatial)``, ``labels (*spatial)`` -> the image with a texture of ``amplitude`` inside the structure."""
        inside = labels == self.label
        if not inside.any():
            return image
        field = smooth_noise(tuple(labels.shape), sigma).to(image.dtype)
        return image + (amplitude * image.std() * field * inside).unsqueeze(0)
