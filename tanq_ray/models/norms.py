"""Target-aware normalisation of TANQ (PAPER.md §1; paper eq. 1-7).

A label map ``(B, H, W)`` with values ``0`` background, ``1`` VS, ``2`` cochlea
is turned, per feature-map size, into a *partition*: a float ``(B, 3, h, w)``
one-hot whose channels are the regions ``[others, vs, cochlea]`` (channel index
= label value) and sum to 1 at every pixel.

Resizing keeps tiny targets alive. Each target's one-hot is reduced with an
adaptive *max*-pool, so a low-resolution pixel belongs to a target as soon as
any input pixel it covers does: a 1-2 pixel cochlea still owns one pixel at
1/4 resolution. Where the pooled VS and cochlea meet in one pixel the cochlea
(the smaller structure) keeps it; "others" is what remains.

Statistics are per sample and channel, over the pixels of a region, biased
variance and ``eps`` as in :class:`torch.nn.InstanceNorm2d`. Pixel counts are
clamped to at least 1, so empty and single-pixel regions give finite values and
gradients (an empty region has no pixels to write to; a single pixel
normalises to 0). Without masks every layer normalises as ``F.instance_norm``
(as the public CUT/QS-Attn generator's ``InstanceNorm2d(affine=False)``),
then applies the "others" affine below, which starts as the identity.

Region norms carry a learnable affine per region (scale and shift per channel,
identity at initialisation), as the basic region normalisation (RN-B) of the
cited RN paper (Yu et al., AAAI 2020) does for its two regions. Without it a
region normalised to zero mean cannot be given a brightness of its own: a
1-2 pixel cochlea, normalised alone, reaches the next layer as zeros whatever
its contrast in hrT2, and the decoder cannot render it bright.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tanq_ray.labels import BACKGROUND, COCHLEA, VALUES, VS

OTHERS = BACKGROUND  # in the norms, every pixel that is neither target
NUM_CLASSES = len(VALUES)

NormKind = Literal["in", "rn", "rn_rain"]
Position = Literal["encoder", "decoder"]


def region_partition(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, H, W)`` int labels -> ``(B, 3, h, w)`` float partition ``[others, vs, cochlea]`` at ``size``.

    Targets are resized by adaptive max-pooling of their one-hot (any overlap
    keeps the pixel); the cochlea wins over the VS on a shared pixel.
    """
    targets = torch.stack([labels == VS, labels == COCHLEA], dim=1).to(torch.float32)
    if tuple(targets.shape[-2:]) != tuple(size):
        targets = F.adaptive_max_pool2d(targets, size)
    cochlea = targets[:, 1]
    vs = targets[:, 0] * (1.0 - cochlea)
    return torch.stack([1.0 - vs - cochlea, vs, cochlea], dim=1)


class RegionMasks:
    """A label map resized on demand to each feature-map size, once per size.

    One instance lives for one generator pass; ``labels=None`` (no mask, e.g.
    real hrT2) makes every target-aware norm an instance norm.
    """

    def __init__(self, labels: Tensor | None) -> None:
        self.labels = labels
        self._cache: dict[tuple[int, int], Tensor] = {}

    def at(self, size: tuple[int, int]) -> Tensor | None:
        """The ``(B, 3, h, w)`` partition at ``size = (h, w)``, or None without labels."""
        if self.labels is None:
            return None
        size = (int(size[0]), int(size[1]))
        if size not in self._cache:
            self._cache[size] = region_partition(self.labels, size)
        return self._cache[size]


def region_moments(x: Tensor, partition: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """Per-region mean and inverse std of ``x`` (eq. 2 / eq. 5), and ``x`` minus its region's mean.

    Args:
        x: ``(B, C, h, w)`` features.
        partition: ``(B, R, h, w)`` region one-hot summing to 1 per pixel.
    Returns:
        ``mean``, ``rstd = 1 / sqrt(var + eps)``: ``(B, C, R)``; ``centred``: ``(B, C, h * w)``.
    Region sums are batched matrix products with the flattened partition
    (two passes: mean, then variance of the centred values).
    """
    m = partition.to(x.dtype).flatten(2)  # (B, R, hw)
    count = m.sum(dim=2).clamp_min(1.0).unsqueeze(1)  # (B, 1, R); >= 1 keeps empty regions finite
    mean = torch.bmm(x.flatten(2), m.transpose(1, 2)) / count
    centred = x.flatten(2) - torch.bmm(mean, m)
    var = torch.bmm(centred.square(), m.transpose(1, 2)) / count
    return mean, torch.rsqrt(var + eps), centred


def region_normalize(x: Tensor, partition: Tensor, eps: float = 1e-5) -> Tensor:
    """Region normalisation: each region normalised by its own statistics and merged (eq. 1-3 / 4-5).

    ``x``: ``(B, C, h, w)``; ``partition``: ``(B, R, h, w)``. Returns ``(B, C, h, w)``.
    """
    _, rstd, centred = region_moments(x, partition, eps)
    return (centred * torch.bmm(rstd, partition.to(x.dtype).flatten(2))).view_as(x)


def region_normalize_rain(
    x: Tensor, partition: Tensor, vs: int = VS, others: int = OTHERS, eps: float = 1e-5
) -> Tensor:
    """Region IN (eq. 4-5), then RAIN for the VS (eq. 6), merged (eq. 7).

    The normalised VS features take the std (gamma) and mean (beta) of the
    *un-normalised* "others" features: ``X̄_vs = X̃_vs · σ_others + μ_others``.
    ``x``: ``(B, C, h, w)``; ``partition``: ``(B, R, h, w)`` with region ``vs`` and
    ``others`` channels. Returns ``(B, C, h, w)``.
    """
    mean, rstd, centred = region_moments(x, partition, eps)
    is_vs = torch.arange(partition.shape[1], device=x.device) == vs
    # eq. (6): X̃_vs · γ_others + β_others with γ = σ_others, β = μ_others; other regions keep eq. (5)
    scale = torch.where(is_vs, rstd / rstd[..., others : others + 1], rstd)
    shift = torch.where(is_vs, mean[..., others : others + 1], torch.zeros_like(mean))
    scale_map, shift_map = torch.bmm(torch.cat([scale, shift], 1), partition.to(x.dtype).flatten(2)).chunk(2, dim=1)
    return torch.addcmul(shift_map, centred, scale_map).view_as(x)


class MaskAware(nn.Module):
    """Marker base class: ``forward(x, masks: RegionMasks | None)``."""


class TargetAwareNorm(MaskAware):
    """The generator's normalisation layer, chosen per position by config.

    ``kind="in"``: instance norm. ``kind="rn"`` in the encoder: region norm over
    r = {cochlea, others} with the VS counted as "others" (eq. 1-3); in the
    decoder: region IN over s = {vs, cochlea, others} (eq. 4-5).
    ``kind="rn_rain"`` (decoder only): as ``rn`` then RAIN for the VS (eq. 6-7).

    ``kind="in"`` has no parameters (as the public CUT/QS-Attn InstanceNorm2d).
    Region kinds with ``region_affine`` then scale and shift each *style* region
    by its own learnable ``(C,)`` weight and bias (RN-B), identity at start. The
    style regions are {others, cochlea} in the encoder and under RAIN (the VS
    takes the statistics of "others" and so their affine too), and {others, vs,
    cochlea} in a decoder ``rn``. Without masks (``masks=None`` or
    ``RegionMasks(None)``) the whole map is "others": instance norm, then the
    "others" affine.
    """

    def __init__(
        self,
        num_features: int,
        kind: NormKind = "in",
        position: Position = "encoder",
        eps: float = 1e-5,
        region_affine: bool = True,
    ):
        super().__init__()
        if kind == "rn_rain" and position != "decoder":
            raise ValueError("rn_rain needs the VS region, which only decoder norms separate; use 'rn' or 'in'")
        self.num_features, self.kind, self.position, self.eps = num_features, kind, position, eps
        self.style_regions: tuple[int, ...] = (
            (OTHERS, VS, COCHLEA) if kind == "rn" and position == "decoder" else (OTHERS, COCHLEA)
        )
        self.region_weight: nn.Parameter | None = None
        self.region_bias: nn.Parameter | None = None
        if kind != "in" and region_affine:  # row k: style region self.style_regions[k]
            self.region_weight = nn.Parameter(torch.ones(len(self.style_regions), num_features))
            self.region_bias = nn.Parameter(torch.zeros(len(self.style_regions), num_features))

    def extra_repr(self) -> str:
        affine = self.region_weight is not None
        return f"{self.num_features}, kind={self.kind}, position={self.position}, region_affine={affine}"

    def forward(self, x: Tensor, masks: RegionMasks | None = None) -> Tensor:
        """``x``: ``(B, C, h, w)`` -> ``(B, C, h, w)``; ``masks`` resized to ``(h, w)`` here."""
        partition = None if self.kind == "in" or masks is None else masks.at(x.shape[-2:])
        if partition is None:
            return self._affine(F.instance_norm(x, eps=self.eps), None)
        if self.position == "decoder" and self.kind == "rn":
            return self._affine(region_normalize(x, partition, self.eps), partition)
        # eq. (1): r = {cochlea, others}, the VS joins "others"; RAIN's VS also takes the others' style
        others_and_cochlea = torch.stack([partition[:, OTHERS] + partition[:, VS], partition[:, COCHLEA]], dim=1)
        if self.position == "encoder":
            return self._affine(region_normalize(x, others_and_cochlea, self.eps), others_and_cochlea)
        return self._affine(region_normalize_rain(x, partition, eps=self.eps), others_and_cochlea)

    def _affine(self, x: Tensor, styles: Tensor | None) -> Tensor:
        """Scale and shift by style region: ``styles`` ``(B, len(style_regions), h, w)``, None = all "others"."""
        if self.region_weight is None or self.region_bias is None:
            return x
        if styles is None:
            return x * self.region_weight[0].view(1, -1, 1, 1) + self.region_bias[0].view(1, -1, 1, 1)
        m = styles.to(x.dtype).flatten(2)  # (B, R, hw)
        scale = torch.einsum("rc,brp->bcp", self.region_weight, m).view_as(x)
        shift = torch.einsum("rc,brp->bcp", self.region_bias, m).view_as(x)
        return torch.addcmul(shift, x, scale)
