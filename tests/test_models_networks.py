"""Networks: exact parameter counts, encoder-only passes, the paper's TANQ count, inference isolation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tanq_ray.models.config import CycleGANConfig, TanqConfig
from tanq_ray.models.discriminator import PatchDiscriminator
from tanq_ray.models.generator import ResnetGenerator
from tanq_ray.models.norms import TargetAwareNorm
from tanq_ray.models.patches import PatchProjector
from tanq_ray.models.registry import build_model
from tanq_ray.models.synthetic import synthetic_batch

NCE_LAYERS = (0, 4, 8, 12, 16)


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_public_single_channel_parameter_counts():
    generator = ResnetGenerator(ngf=64, n_blocks=9)
    assert _count(generator) == 11_365_633
    assert _count(PatchDiscriminator(ndf=64, n_layers=3)) == 2_762_689
    assert _count(PatchProjector(generator.layer_channels(NCE_LAYERS), 256)) == 559_872


def test_model_parameter_counts_at_paper_settings():
    tanq = build_model("tanq", TanqConfig())
    counts = tanq.parameter_counts()
    # ResNet-9 + SegDecoder (2 transposed convs + 7x7 conv to 3 classes: 378,243)
    assert counts == {"G": 11_743_876, "D": 2_762_689, "F": 559_872}
    assert tanq.generator_parameters_count() == counts["G"]
    qs_attn = build_model("tanq", TanqConfig(encoder_norm="in", decoder_norm="in", segdecoder=False))
    assert qs_attn.generator_parameters_count() == 11_365_633
    cyclegan = build_model("cyclegan", CycleGANConfig())
    assert cyclegan.parameter_counts() == {"G_A": 11_365_633, "G_B": 11_365_633, "D_A": 2_762_689, "D_B": 2_762_689}


def test_hypothesis_for_the_papers_8_219m_generator():
    """Paper: TANQ G 8.219M. ResNet-6 + SegDecoder, with two learnable (gamma, beta) pairs per channel in
    every norm (as the public RN/RAIN layers have for foreground and background), gives 8,219,012."""
    generator = ResnetGenerator(ngf=64, n_blocks=6, encoder_norm="rn", decoder_norm="rn_rain", segdecoder=True)
    assert _count(generator) == 8_203_396
    normalised_channels = sum(
        m.num_features for m in generator.modules() if isinstance(m, (TargetAwareNorm, nn.InstanceNorm2d))
    )
    assert normalised_channels == 3_904
    assert _count(generator) + 4 * normalised_channels == 8_219_012


def test_encode_features_skips_the_decoder_and_matches_the_full_pass():
    generator = ResnetGenerator(ngf=8, n_blocks=8, encoder_norm="rn", decoder_norm="rn_rain", segdecoder=True)
    batch = synthetic_batch(2, 32)
    calls = []
    for layer in [*generator.decoder, generator.encoder[17]]:  # decoder and the residual block after layer 16
        layer.register_forward_hook(lambda *_: calls.append(1))
    features = generator.encode_features(batch["source"], batch["source_label"], NCE_LAYERS)
    assert not calls
    assert [tuple(f.shape[1:]) for f in features] == [(1, 38, 38), (16, 16, 16), (32, 8, 8), (32, 8, 8), (32, 8, 8)]
    full = generator.forward_features(batch["source"], batch["source_label"], NCE_LAYERS)
    assert calls
    for a, b in zip(features, full.features, strict=True):
        assert torch.equal(a, b)
    assert full.image.shape == (2, 1, 32, 32) and full.image.abs().max() <= 1
    assert generator.segment(full.bottleneck).shape == (2, 3, 32, 32)
    assert generator.layer_channels(NCE_LAYERS) == [1, 16, 32, 32, 32]
    with pytest.raises(ValueError, match="layers 0..17"):
        generator.encode_features(batch["source"], None, (0, 18))


def test_config_refuses_nce_layers_past_the_encoder():
    with pytest.raises(ValueError, match="last encoder layer is 15"):
        TanqConfig(n_blocks=6)
    assert TanqConfig(n_blocks=6, nce_layers=(0, 4, 8, 12, 15)).nce_layers[-1] == 15


def _tiny_tanq():
    config = TanqConfig(ngf=8, ndf=8, n_blocks=2, nce_layers=(0, 4, 8, 10, 11), num_patches=32)
    return build_model("tanq", config)


def test_translate_is_deterministic_and_uses_the_generator_only():
    model = _tiny_tanq()
    batch = synthetic_batch(2, 32)
    model.step(batch)
    for net in model.nets.values():
        net.zero_grad(set_to_none=True)
    touched = []
    for name in ("D", "F"):
        model.nets[name].register_forward_hook(lambda *_, name=name: touched.append(name))
    first = model.translate(batch["source"], batch["source_label"])
    second = model.translate(batch["source"], batch["source_label"])
    assert torch.equal(first, second) and first.shape == (2, 1, 32, 32) and not first.requires_grad
    assert not touched
    assert all(p.grad is None for name in ("G", "D", "F") for p in model.nets[name].parameters())
    assert model.G.training  # translate restores the training mode
    without_mask = model.translate(batch["source"])
    assert not torch.equal(first, without_mask)  # the target-aware norms used the labels


def test_cyclegan_translate_uses_g_a_only():
    model = build_model("cyclegan", CycleGANConfig(ngf=8, ndf=8, n_blocks=2))
    touched = []
    for name, net in model.nets.items():
        net.register_forward_hook(lambda *_, name=name: touched.append(name))
    out = model.translate(synthetic_batch(1, 32)["source"])
    assert out.shape == (1, 1, 32, 32) and touched == ["G_A"]


def test_build_model_names_the_choices():
    with pytest.raises(ValueError, match="cyclegan"):
        build_model("unet")
    with pytest.raises(TypeError, match="CycleGANConfig"):
        build_model("cyclegan", TanqConfig())
