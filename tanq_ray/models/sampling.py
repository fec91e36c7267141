"""Anti-aliased down- and upsampling (blur pooling), the default of the public CUT/QS-Attn networks.

A stride-2 convolution keeps every other output and so aliases high
frequencies into the coarser map; a transposed convolution with stride 2
paints a checkerboard. The public CUT code (and QS-Attn, built on it)
instead convolves at stride 1 and then resamples with a fixed binomial
low-pass filter (Zhang, "Making convolutional networks shift-invariant
again", ICML 2019):

- :class:`BlurDownsample`: reflection padding, ``[1, 2, 1]`` binomial blur
  (outer product, normalised to sum 1) applied per channel at stride 2.
  ``(B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2))``.
- :class:`BlurUpsample`: zero insertion and a ``[1, 3, 3, 1]`` binomial blur
  scaled by 4 (a transposed depthwise convolution at stride 2) with
  replication padding. ``(B, C, H, W) -> (B, C, 2H, 2W)``; a constant map stays
  the same constant.

Neither has parameters (the filters are buffers), so parameter counts do not
change with anti-aliasing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def binomial_filter(taps: int) -> Tensor:
    """``(taps, taps)`` outer product of the binomial row ``C(taps - 1, k)``, normalised to sum 1."""
    row = torch.tensor([math.comb(taps - 1, k) for k in range(taps)], dtype=torch.float32)
    kernel = row[:, None] * row[None, :]
    return kernel / kernel.sum()


class BlurDownsample(nn.Module):
    """Blur with the 3-tap binomial filter, then keep every other pixel: ``(B, C, H, W) -> (B, C, ⌈H/2⌉, ⌈W/2⌉)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("kernel", binomial_filter(3).expand(channels, 1, 3, 3).clone())

    def extra_repr(self) -> str:
        return f"{self.channels}"

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=2, groups=self.channels)


class BlurUpsample(nn.Module):
    """Insert zeros between pixels and blur with the 4-tap binomial filter (x4): ``(B, C, H, W) -> (B, C, 2H, 2W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("kernel", (4.0 * binomial_filter(4)).expand(channels, 1, 4, 4).clone())

    def extra_repr(self) -> str:
        return f"{self.channels}"

    def forward(self, x: Tensor) -> Tensor:
        # one replicated pixel each side keeps the border from darkening; the transposed conv of the
        # (H + 2) padded map is 2H + 2 wide, and the centred 2H x 2W window is the upsampled map
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        up = F.conv_transpose2d(padded, self.kernel, stride=2, padding=2, groups=self.channels)
        return up[:, :, 1:-1, 1:-1]
