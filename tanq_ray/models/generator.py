"""ResNet encoder-decoder generator with target-aware norms and an optional SegDecoder.

Layout of the public CUT/CycleGAN ``ResnetGenerator``, single-channel in and
out. With ``antialias`` (the CUT/QS-Attn default) each downsampling is a
stride-1 conv, norm, ReLU and a :class:`~tanq_ray.models.sampling.BlurDownsample`,
and each upsampling a :class:`~tanq_ray.models.sampling.BlurUpsample`, a
stride-1 conv, norm and ReLU. Without it (CUT's ``--no_antialias
--no_antialias_up``, and the original CycleGAN code) they are stride-2 convs
and stride-2 transposed convs. Encoder layers in CUT's indexing, which
``nce_layers`` refers to, so that a layer number means what it means in the
public code under either choice::

    antialias                                  without
    0 ReflectionPad(3)  1 Conv7x7 1->ngf       (same)
    2 norm  3 ReLU                             (same)
    4 Conv3x3 ->2ngf  5 norm  6 ReLU  7 blur↓  4 Conv3x3/2 ->2ngf  5 norm  6 ReLU
    8 Conv3x3 ->4ngf  9 norm 10 ReLU 11 blur↓  7 Conv3x3/2 ->4ngf  8 norm  9 ReLU
    12 .. residual blocks (4ngf)               10 .. residual blocks (4ngf)

Decoder: 2 upsamplings (4ngf -> ngf), ReflectionPad(3), Conv7x7 -> 1, tanh.
Encoder norms (stem, downsamplings, residual blocks) are ``encoder_norm``
(``in`` or ``rn``); the two upsampling norms are ``decoder_norm`` (``in``,
``rn`` or ``rn_rain``); see :mod:`tanq_ray.models.norms`. The blur filters
are buffers, so parameter counts do not depend on ``antialias``; with
``region_affine=False`` they equal the public code's (11,365,633 for
ResNet-9, ngf 64).

The SegDecoder (eq. 8) mirrors the upsampling path on the encoder output and
ends in a 7x7 conv to 3 logits (background, VS, cochlea). Its norms are plain
instance norms: the labels it predicts are not fed to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from torch import Tensor, nn

from tanq_ray.models.norms import NUM_CLASSES, MaskAware, NormKind, RegionMasks, TargetAwareNorm
from tanq_ray.models.sampling import BlurDownsample, BlurUpsample


class ResnetBlock(MaskAware):
    """``x + norm(conv(relu(norm(conv(x)))))`` with reflection padding; shape preserved ``(B, C, h, w)``."""

    def __init__(self, channels: int, norm: NormKind = "in", region_affine: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3))
        self.norm1 = TargetAwareNorm(channels, norm, "encoder", region_affine=region_affine)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3))
        self.norm2 = TargetAwareNorm(channels, norm, "encoder", region_affine=region_affine)

    def forward(self, x: Tensor, masks: RegionMasks | None = None) -> Tensor:
        h = self.norm1(self.conv1(x), masks).relu()
        return x + self.norm2(self.conv2(h), masks)


def _downsampling(ngf: int, norm: Callable[[int], nn.Module], antialias: bool) -> list[nn.Module]:
    """Two downsamplings (ngf -> 4ngf): conv/2, norm, ReLU; or conv, norm, ReLU, blur-pool with ``antialias``."""
    layers: list[nn.Module] = []
    for mult in (1, 2):
        width = ngf * mult * 2
        if antialias:
            layers += [nn.Conv2d(ngf * mult, width, 3, padding=1), norm(width), nn.ReLU(), BlurDownsample(width)]
        else:
            layers += [nn.Conv2d(ngf * mult, width, 3, stride=2, padding=1), norm(width), nn.ReLU()]
    return layers


def _upsampling(ngf: int, out_channels: int, norm: Callable[[int], nn.Module], antialias: bool) -> list[nn.Module]:
    """Two upsamplings (4ngf -> ngf) and the 7x7 output conv, shared by decoder and SegDecoder.

    Each upsampling is a transposed conv/2, norm, ReLU; or with ``antialias`` a blur upsampling, conv, norm, ReLU.
    """
    layers: list[nn.Module] = []
    for mult in (4, 2):
        width = ngf * mult // 2
        if antialias:
            layers += [BlurUpsample(ngf * mult), nn.Conv2d(ngf * mult, width, 3, padding=1), norm(width), nn.ReLU()]
        else:
            layers += [
                nn.ConvTranspose2d(ngf * mult, width, 3, stride=2, padding=1, output_padding=1),
                norm(width),
                nn.ReLU(),
            ]
    return layers + [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7)]


@dataclass
class GeneratorOutput:
    """One generator pass that also kept encoder features."""

    image: Tensor
    """``(B, 1, H, W)`` translation in [-1, 1]."""
    features: list[Tensor]
    """Encoder features at the requested layers, in layer order."""
    bottleneck: Tensor
    """``(B, 4ngf, H/4, W/4)`` encoder output, input of the decoder and of the SegDecoder."""



class ResnetGenerator(nn.Module):
    """ResNet generator (one channel in and out by default); ``labels`` (B, H, W) feed the target-aware norms."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        n_blocks: int = 9,
        encoder_norm: NormKind = "in",
        decoder_norm: NormKind = "in",
        segdecoder: bool = False,
        num_classes: int = NUM_CLASSES,
        region_affine: bool = True,
        antialias: bool = False,
    ) -> None:
        super().__init__()

        def enc_norm(channels: int) -> nn.Module:
            return TargetAwareNorm(channels, encoder_norm, "encoder", region_affine=region_affine)

        def dec_norm(channels: int) -> nn.Module:
            return TargetAwareNorm(channels, decoder_norm, "decoder", region_affine=region_affine)

        encoder: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), enc_norm(ngf), nn.ReLU()]
        encoder += _downsampling(ngf, enc_norm, antialias)
        encoder += [ResnetBlock(ngf * 4, encoder_norm, region_affine) for _ in range(n_blocks)]
        self.encoder = nn.ModuleList(encoder)
        self.decoder = nn.ModuleList(_upsampling(ngf, out_channels, dec_norm, antialias) + [nn.Tanh()])
        segmentation_head = _upsampling(ngf, num_classes, nn.InstanceNorm2d, antialias)
        self.segdecoder = nn.Sequential(*segmentation_head) if segdecoder else None
        self._channels = _layer_channels(self.encoder, in_channels)

    # -- passes -----------------------------------------------------------------------------
    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """``(B, 1, H, W)`` image (H, W multiples of 4), optional ``(B, H, W)`` labels -> ``(B, 1, H, W)``."""
        return self.forward_features(x, labels, ()).image

    def forward_features(self, x: Tensor, labels: Tensor | None, layers: Sequence[int]) -> GeneratorOutput:
        """Translate ``x`` and keep the encoder features at ``layers`` (one pass, masks resized once per size)."""
        masks = self._masks(x, labels)
        bottleneck, features = self._encode(x, masks, layers, stop_early=False)
        image = bottleneck
        for layer in self.decoder:
            image = layer(image, masks) if isinstance(layer, MaskAware) else layer(image)
        return GeneratorOutput(image, features, bottleneck)

    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Encoder output ``(B, 4ngf, H/4, W/4)`` (input of the decoder and the SegDecoder)."""
        return self._encode(x, self._masks(x, labels), (), stop_early=False)[0]

    def encode_features(self, x: Tensor, labels: Tensor | None, layers: Sequence[int]) -> list[Tensor]:
        """Encoder features at ``layers`` only: stops after the last one, never runs the decoder."""
        return self._encode(x, self._masks(x, labels), layers, stop_early=True)[1]

    def segment(self, bottleneck: Tensor) -> Tensor:
        """SegDecoder logits ``(B, 3, H, W)`` from the encoder output ``(B, 4ngf, H/4, W/4)``."""
        if self.segdecoder is None:
            raise RuntimeError("this generator was built without a SegDecoder (segdecoder=False)")
        return self.segdecoder(bottleneck)

    # -- geometry ---------------------------------------------------------------------------
    def layer_channels(self, layers: Sequence[int]) -> list[int]:
        """Channels of the encoder features at ``layers`` (sizes the PatchNCE projector)."""
        self._check_layers(layers)
        return [self._channels[i] for i in layers]

    @staticmethod
    def layer_padding(layer: int) -> int:
        """Pixels of reflection padding around the features of ``layer`` (3 for the padded input, layer 0)."""
        return 3 if layer == 0 else 0

    # -- internals --------------------------------------------------------------------------
    def _masks(self, x: Tensor, labels: Tensor | None) -> RegionMasks:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be a multiple of 4 (two stride-2 levels)")
        if labels is not None and (labels.shape[0] != x.shape[0] or labels.shape[-2:] != x.shape[-2:]):
            raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(x.shape)}: need (B, H, W)")
        return RegionMasks(labels)

    def _check_layers(self, layers: Sequence[int]) -> None:
        bad = [i for i in layers if not 0 <= i < len(self.encoder)]
        if bad:
            raise ValueError(f"encoder layers {bad} do not exist: this encoder has layers 0..{len(self.encoder) - 1}")

    def _encode(
        self, x: Tensor, masks: RegionMasks, layers: Sequence[int], stop_early: bool
    ) -> tuple[Tensor, list[Tensor]]:
        self._check_layers(layers)
        wanted = set(layers)
        last = max(layers) if (stop_early and layers) else len(self.encoder) - 1
        features = []
        for index, layer in enumerate(self.encoder[: last + 1]):
            x = layer(x, masks) if isinstance(layer, MaskAware) else layer(x)
            if index in wanted:
                features.append(x)
        return x, features


def _layer_channels(encoder: nn.ModuleList, in_channels: int) -> list[int]:
    channels, out = in_channels, []
    for layer in encoder:
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
        out.append(channels)
    return out
