"""Structure preservation of a translation, computable without target labels.

A translator must change contrast (ceT1 -> hrT2) but keep anatomy where it
was. We compare the *directions* of intensity edges of each ceT1 slice and
its translation with the normalised gradient field (NGF) similarity used in
multi-modal registration (Haber & Modersitzki, 2006):

    n_a(p) = grad a(p) / sqrt(|grad a(p)|^2 + e_a^2)
    s(a, b) = mean over p in M of (n_a(p) . n_b(p))^2
    score(a, b) = s(a, b) / sqrt(s(a, a) s(b, b))

``e`` (the image's mean gradient magnitude inside ``M``) damps noise-level
gradients. By Cauchy-Schwarz the score lies in [0, 1]; it is 1 for the
identity, for any rescaling and for a contrast inversion (the square), and
falls as edges move or vanish. ``M`` is a band around the labelled
structures (VS, cochlea) of the ceT1 label, so the score asks "are the
targets' boundaries still where they were", using source labels only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def image_gradients(images: torch.Tensor) -> torch.Tensor:
    """Central differences of ``(N, H, W)`` images -> ``(N, 2, H, W)`` (d/dy, d/dx), replicate-padded."""
    padded = F.pad(images[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    d_dy = (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]) / 2
    d_dx = (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) / 2
    return torch.stack([d_dy, d_dx], dim=1)


def structure_band(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """``(N, H, W)`` integer labels -> boolean band: foreground dilated by ``radius`` pixels (square)."""
    foreground = (labels > 0).float()[:, None]
    return F.max_pool2d(foreground, 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0


def _normalised_field(images: torch.Tensor, weight: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """``n = grad / sqrt(|grad|^2 + e^2)`` with ``e`` the mean ``|grad|`` inside the mask, per slice -> ``(N, 2, H, W)``."""
    grad = image_gradients(images.float())
    level = ((grad.norm(dim=1) * weight).sum(dim=(1, 2)) / pixels).clamp(min=1e-6)
    return grad / torch.sqrt(grad.pow(2).sum(dim=1, keepdim=True) + level[:, None, None, None] ** 2)


def structure_score(source: torch.Tensor, translated: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-slice normalised NGF score of ``(N, H, W)`` image pairs inside ``mask`` -> ``(N,)`` in [0, 1] (module docstring)."""
    if source.shape != translated.shape or source.shape != mask.shape:
        raise ValueError(f"source {tuple(source.shape)}, translated {tuple(translated.shape)} and mask {tuple(mask.shape)} differ")
    weight = mask.float()
    pixels = weight.sum(dim=(1, 2)).clamp(min=1)
    n_a, n_b = _normalised_field(source, weight, pixels), _normalised_field(translated, weight, pixels)

    def mean_in_mask(values: torch.Tensor) -> torch.Tensor:
        return (values * weight).sum(dim=(1, 2)) / pixels

    cross = mean_in_mask((n_a * n_b).sum(dim=1) ** 2)
    own_a, own_b = mean_in_mask(n_a.pow(2).sum(dim=1) ** 2), mean_in_mask(n_b.pow(2).sum(dim=1) ** 2)
    return cross / torch.sqrt(own_a * own_b).clamp(min=1e-12)
