"""Target-aware normalisation: region statistics, RAIN, instance-norm fallback, tiny and empty regions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tanq_ray.models.generator import ResnetGenerator
from tanq_ray.models.norms import (
    COCHLEA,
    OTHERS,
    VS,
    RegionMasks,
    TargetAwareNorm,
    region_partition,
)


def _labels(size: int = 16) -> torch.Tensor:
    """Two samples with a VS block and a small cochlea."""
    labels = torch.zeros(2, size, size, dtype=torch.long)
    labels[:, 3:8, 3:9] = VS
    labels[:, 10:12, 11:13] = COCHLEA
    labels[1, 10:12, 11:13] = OTHERS
    labels[1, 12, 4] = COCHLEA  # sample 1: single-pixel cochlea
    return labels


def _features(labels: torch.Tensor, channels: int = 4) -> torch.Tensor:
    """Features whose statistics differ strongly between regions."""
    torch.manual_seed(0)
    x = torch.randn(labels.shape[0], channels, *labels.shape[1:])
    offset = torch.tensor([0.0, 5.0, -3.0])[labels].unsqueeze(1)
    scale = torch.tensor([1.0, 4.0, 2.0])[labels].unsqueeze(1)
    return x * scale + offset + torch.arange(channels).view(1, -1, 1, 1)


def _region_stats(y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) std of ``y[:, :, mask]`` for one sample ``y`` (C, H, W)."""
    values = y[:, mask]
    return values.mean(dim=1), values.std(dim=1, unbiased=False)


def test_decoder_region_norm_normalises_each_region_independently():
    labels = _labels()
    x = _features(labels)
    y = TargetAwareNorm(4, "rn", "decoder")(x, RegionMasks(labels))
    sample = 0  # all three regions have several pixels
    for region in (OTHERS, VS, COCHLEA):
        mean, std = _region_stats(y[sample], labels[sample] == region)
        torch.testing.assert_close(mean, torch.zeros(4), atol=1e-5, rtol=0)
        torch.testing.assert_close(std, torch.ones(4), atol=1e-3, rtol=0)
    # changing one region's input leaves the other regions' outputs unchanged
    x2 = x.clone()
    x2[:, :, labels[0] == VS] *= 10
    y2 = TargetAwareNorm(4, "rn", "decoder")(x2, RegionMasks(labels))
    keep = labels[0] != VS
    torch.testing.assert_close(y2[0][:, keep], y[0][:, keep])


def test_encoder_region_norm_counts_vs_as_others():
    labels = _labels()
    x = _features(labels)
    y = TargetAwareNorm(4, "rn", "encoder")(x, RegionMasks(labels))
    for mask in (labels[0] != COCHLEA, labels[0] == COCHLEA):
        mean, std = _region_stats(y[0], mask)
        torch.testing.assert_close(mean, torch.zeros(4), atol=1e-5, rtol=0)
        torch.testing.assert_close(std, torch.ones(4), atol=1e-3, rtol=0)


def test_rain_gives_the_vs_the_statistics_of_the_unnormalised_others():
    labels = _labels()
    x = _features(labels)
    y = TargetAwareNorm(4, "rn_rain", "decoder")(x, RegionMasks(labels))
    for sample in (0, 1):
        others_mean, others_std = _region_stats(x[sample], labels[sample] == OTHERS)
        vs_mean, vs_std = _region_stats(y[sample], labels[sample] == VS)
        torch.testing.assert_close(vs_mean, others_mean, atol=1e-4, rtol=0)
        torch.testing.assert_close(vs_std, others_std, atol=1e-3, rtol=1e-3)
        for region in (OTHERS, COCHLEA):  # eq. (7): the other regions stay region-normalised
            mean, _ = _region_stats(y[sample], labels[sample] == region)
            torch.testing.assert_close(mean, torch.zeros(4), atol=1e-5, rtol=0)


ALL_NORMS = [("in", "encoder"), ("rn", "encoder"), ("rn", "decoder"), ("rn_rain", "decoder")]


@pytest.mark.parametrize("kind, position", ALL_NORMS)
def test_without_mask_every_norm_is_instance_norm(kind, position):
    x = _features(_labels())
    reference = nn.InstanceNorm2d(4)(x)
    norm = TargetAwareNorm(4, kind, position)
    assert torch.equal(norm(x, None), reference)
    assert torch.equal(norm(x, RegionMasks(None)), reference)
    all_others = RegionMasks(torch.zeros(2, 16, 16, dtype=torch.long))
    torch.testing.assert_close(norm(x, all_others), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind, position", [("rn", "encoder"), ("rn", "decoder"), ("rn_rain", "decoder")])
@pytest.mark.parametrize("case", ["no_vs_no_cochlea", "single_pixels", "all_vs"])
def test_empty_and_single_pixel_regions_are_finite(kind, position, case):
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    if case == "single_pixels":
        labels[:, 2, 2], labels[:, 5, 6] = VS, COCHLEA
    elif case == "all_vs":
        labels[:] = VS  # empty "others": RAIN borrows the statistics of an empty region
    x = _features(labels).requires_grad_(True)
    y = TargetAwareNorm(4, kind, position)(x, RegionMasks(labels))
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    if case == "single_pixels" and kind == "rn":
        assert torch.count_nonzero(y[:, :, 5, 6]) == 0  # a single pixel normalises to 0


def test_partition_keeps_a_one_pixel_cochlea_at_every_depth():
    for size in (64, 62, 30):
        labels = torch.zeros(1, size, size, dtype=torch.long)
        labels[0, 17, 21] = COCHLEA
        labels[0, 30 % size : 30 % size + 2, 5:7] = VS
        for depth in (1, 2, 4):
            h = -(-size // depth)  # the generator's feature sizes: ceil(size / depth)
            partition = region_partition(labels, (h, h))
            assert partition[:, COCHLEA].sum() >= 1 and partition[:, VS].sum() >= 1
            torch.testing.assert_close(partition.sum(1), torch.ones(1, h, h))
            assert ((partition == 0) | (partition == 1)).all()


def test_generator_norms_see_the_cochlea_at_the_deepest_feature_map():
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[0, 40:42, 33] = COCHLEA  # two pixels
    generator = ResnetGenerator(ngf=4, n_blocks=1, encoder_norm="rn", decoder_norm="rn_rain")
    seen: dict[tuple[int, int], float] = {}

    def record(module, inputs, _output):
        x, masks = inputs
        seen[tuple(x.shape[-2:])] = float(masks.at(x.shape[-2:])[:, COCHLEA].sum())

    for module in generator.modules():
        if isinstance(module, TargetAwareNorm):
            module.register_forward_hook(record)
    generator(torch.zeros(1, 1, 64, 64), labels)
    assert set(seen) == {(64, 64), (32, 32), (16, 16)}
    assert all(area > 0 for area in seen.values())


def test_rain_is_refused_in_the_encoder():
    with pytest.raises(ValueError, match="rn_rain"):
        TargetAwareNorm(4, "rn_rain", "encoder")


@pytest.mark.parametrize("kind, position", [("rn", "encoder"), ("rn", "decoder"), ("rn_rain", "decoder")])
def test_region_affine_gives_a_single_pixel_cochlea_a_brightness_of_its_own(kind, position):
    """Normalised alone, a one-pixel cochlea is 0 whatever its input; its own shift is what can make it bright."""
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 5, 6] = COCHLEA
    x = _features(labels)
    norm = TargetAwareNorm(4, kind, position)
    assert norm.region_weight is not None and norm.region_bias is not None
    cochlea_row = norm.style_regions.index(COCHLEA)
    with torch.no_grad():
        norm.region_bias[cochlea_row] = 2.0
    y = norm(x, RegionMasks(labels))
    assert torch.equal(y[0, :, 5, 6], torch.full((4,), 2.0))
    plain = TargetAwareNorm(4, kind, position, region_affine=False)
    assert plain.region_weight is None
    torch.testing.assert_close(y[0, :, :5], plain(x, RegionMasks(labels))[0, :, :5])  # "others" untouched


def test_rain_vs_takes_the_affine_of_the_others():
    labels = _labels()
    x = _features(labels)
    norm = TargetAwareNorm(4, "rn_rain", "decoder")
    assert norm.style_regions == (OTHERS, COCHLEA)
    with torch.no_grad():
        norm.region_weight[0], norm.region_bias[0] = 3.0, -1.0
    plain = TargetAwareNorm(4, "rn_rain", "decoder", region_affine=False)(x, RegionMasks(labels))
    vs = labels[0] == VS
    torch.testing.assert_close(norm(x, RegionMasks(labels))[0][:, vs], plain[0][:, vs] * 3.0 - 1.0)
