"""PatchGAN discriminator (public CycleGAN/CUT ``NLayerDiscriminator``, instance norm)."""

from __future__ import annotations

from torch import nn

from tanq_ray.models.sampling import BlurDownsample


class PatchDiscriminator(nn.Sequential):
    """``(B, 1, H, W)`` image -> ``(B, 1, h, w)`` real/fake score per overlapping patch.

    ``n_layers=3`` gives the 70x70 receptive field: a 4x4/2 conv (no norm),
    ``n_layers - 1`` more 4x4/2 convs and one 4x4/1 conv with instance norm and
    LeakyReLU(0.2), widths ``ndf * min(2**k, 8)``, then a 4x4/1 conv to one
    channel. With ``antialias`` (the CUT default) every 4x4/2 conv becomes a
    4x4/1 conv followed, after its norm and LeakyReLU, by a
    :class:`~tanq_ray.models.sampling.BlurDownsample`. 2,762,689 parameters at
    ``ndf=64``, one input channel, either way.
    """

    def __init__(self, in_channels: int = 1, ndf: int = 64, n_layers: int = 3, antialias: bool = False) -> None:
        stride = 1 if antialias else 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=stride, padding=1), nn.LeakyReLU(0.2)]
        layers += [BlurDownsample(ndf)] if antialias else []
        width = ndf
        for k in range(1, n_layers + 1):
            out = ndf * min(2**k, 8)
            downsamples = k < n_layers
            conv_stride = 2 if downsamples and not antialias else 1
            layers += [nn.Conv2d(width, out, 4, stride=conv_stride, padding=1), nn.InstanceNorm2d(out), nn.LeakyReLU(0.2)]
            layers += [BlurDownsample(out)] if downsamples and antialias else []
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        super().__init__(*layers)
