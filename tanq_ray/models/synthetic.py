"""Toy training batches for tests and benchmarks of the translators (not a data set).

Head-like slices: a textured ellipse on a dark background with a VS blob
beside the centre and a 1-3 pixel cochlea next to it. Contrast is opposite in
the two domains, as between ceT1 and hrT2: in the source the VS is bright and
the cochlea dark; in the target the VS is as dark as its surroundings and the
cochlea bright. Source and target slices are drawn independently (unpaired).
The cohort generator for whole pipelines is ``tanq_ray.data.phantom``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tanq_ray.models.base import Batch
from tanq_ray.labels import COCHLEA, VS

# (tissue, VS, cochlea) intensities in [-1, 1]; the background is -1.
_SOURCE = (0.0, 0.9, -0.8)
_TARGET = (0.1, 0.05, 0.95)


def _slices(n: int, size: int, contrast: tuple[float, float, float], rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` slices ``(n, 1, size, size)`` and their labels ``(n, size, size)``."""
    tissue, vs, cochlea = contrast
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    images, labels = [], []
    for _ in range(n):
        u = torch.rand(8, generator=rng)
        head = (xx / (0.75 + 0.1 * u[0])) ** 2 + (yy / (0.85 + 0.1 * u[1])) ** 2 <= 1
        cy, cx = 0.3 * (u[2] - 0.5), -0.3 - 0.15 * u[3]  # VS centre, left of the midline
        vs_mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (0.08 + 0.06 * u[4]) ** 2
        label = torch.zeros(size, size, dtype=torch.long)
        label[vs_mask & head] = VS
        # cochlea: a square of 1-2 pixels a side at 64 x 64 (scaled with size), just below the VS
        side = max(1, round(size / 64 * (1 + float(u[7]))))
        row = int((cy + 0.25 + 0.05 * u[5] + 1) / 2 * size)
        col = int((cx + 0.05 * u[6] + 1) / 2 * size)
        label[row : row + side, col : col + side] = COCHLEA
        texture = 0.1 * torch.sin(6 * xx + 4 * yy + 6.28 * u[0]) + 0.05 * torch.randn(size, size, generator=rng)
        image = torch.full((size, size), -1.0)
        image[head] = tissue + texture[head]
        image[label == VS] = vs + 0.5 * texture[label == VS]
        image[label == COCHLEA] = cochlea
        images.append(image.clamp(-1, 1))
        labels.append(label)
    return torch.stack(images).unsqueeze(1), torch.stack(labels)


def synthetic_batch(batch_size: int = 2, size: int = 64, seed: int = 0) -> Batch:
    """A :class:`~tanq_ray.models.base.Batch` of toy ceT1 (labelled) and unpaired hrT2 slices."""
    rng = torch.Generator().manual_seed(seed)
    source, label = _slices(batch_size, size, _SOURCE, rng)
    target, _ = _slices(batch_size, size, _TARGET, rng)
    return {"source": source, "source_label": label, "target": target}
