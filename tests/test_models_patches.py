"""Patch selection (random, QS-Attn global), PatchNCE, LSGAN and the learning-rate schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tanq_ray.models.losses import lsgan_loss, patch_nce_loss
from tanq_ray.models.patches import (
    PatchSampler,
    gather_patches,
    qs_global_selection,
    random_selection,
)
from tanq_ray.models.schedule import linear_decay_lr


def _direct_attention(features: torch.Tensor) -> torch.Tensor:
    """A = softmax(Q Kᵀ) over all positions, in float64, straight from the definition."""
    q = features.double().flatten(2).transpose(1, 2)  # (B, HW, C)
    return torch.softmax(q @ q.transpose(1, 2), dim=-1)


def test_qs_selection_keeps_the_lowest_entropy_rows():
    torch.manual_seed(0)
    features = torch.randn(2, 8, 6, 5)
    a = _direct_attention(features)
    entropy = -(a * a.log()).sum(-1)  # eq. (9)
    selection = qs_global_selection(features, num_patches=7)
    assert selection.grid == (6, 5) and selection.indices.shape == (2, 7)
    assert torch.equal(selection.indices, entropy.argsort(dim=1)[:, :7])
    rows = a.gather(1, selection.indices.unsqueeze(-1).expand(-1, -1, 30))
    torch.testing.assert_close(selection.attention.double(), rows, atol=1e-6, rtol=1e-5)


def test_qs_selection_is_reused_for_the_translated_features():
    torch.manual_seed(1)
    source, translated = torch.randn(2, 8, 6, 5), torch.randn(2, 8, 6, 5)
    selection = qs_global_selection(source, num_patches=7)
    values = translated.flatten(2).transpose(1, 2)
    expected = selection.attention @ values  # the source's attention rows applied to the translation
    torch.testing.assert_close(gather_patches(translated, selection), expected)
    own = qs_global_selection(translated, num_patches=7)
    assert not torch.equal(own.indices, selection.indices)  # i.e. reuse is not a coincidence


def test_random_selection_draws_distinct_positions_per_sample():
    torch.manual_seed(0)
    features = torch.randn(3, 4, 10, 10)
    selection = random_selection(features, num_patches=40)
    assert selection.attention is None and selection.indices.shape == (3, 40)
    for row in selection.indices:
        assert len(set(row.tolist())) == 40 and 0 <= int(row.min()) and int(row.max()) < 100
    assert not torch.equal(selection.indices[0], selection.indices[1])
    patches = gather_patches(features, selection)
    flat = features.flatten(2)
    assert torch.equal(patches[2, 5], flat[2, :, selection.indices[2, 5]])
    assert random_selection(features, num_patches=1000).indices.shape == (3, 100)


def test_sampler_uses_qs_on_the_last_layers_only():
    features = [torch.randn(1, 4, 8, 8) for _ in range(5)]
    qs = PatchSampler(16, "qs_global", qs_layers=2).select(features)
    assert [s.attention is not None for s in qs] == [False, False, False, True, True]
    cut = PatchSampler(16, "random", qs_layers=2).select(features)
    assert all(s.attention is None for s in cut)


def test_patch_nce_is_minimal_for_matching_features_and_grows_when_shuffled():
    torch.manual_seed(0)
    key = F.normalize(torch.randn(2, 64, 16), dim=-1)
    matched = patch_nce_loss(key.clone(), key).mean()
    shuffled = patch_nce_loss(key[:, torch.randperm(64)], key).mean()
    noisy = patch_nce_loss(F.normalize(key + 0.3 * torch.randn_like(key), dim=-1), key).mean()
    assert matched < noisy < shuffled
    assert float(shuffled) > 3.0 and float(matched) < 0.5
    # the key is a target: no gradient flows into it
    query = key.clone().requires_grad_(True)
    key_leaf = key.clone().requires_grad_(True)
    patch_nce_loss(query, key_leaf).sum().backward()
    assert query.grad is not None and key_leaf.grad is None


def test_lsgan_targets():
    scores = torch.full((2, 1, 4, 4), 0.25)
    assert float(lsgan_loss(scores, True)) == pytest.approx(0.5625)
    assert float(lsgan_loss(scores, False)) == pytest.approx(0.0625)


def test_linear_decay_lr_matches_the_public_policy():
    rates = [linear_decay_lr(2e-4, epoch, 400) for epoch in range(401)]
    assert rates[0] == rates[199] == 2e-4
    assert rates[200] == pytest.approx(2e-4 * 200 / 201)
    assert rates[399] == pytest.approx(2e-4 / 201) and rates[400] == 0
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert [linear_decay_lr(1.0, e, 4) for e in range(4)] == [1.0, 1.0, pytest.approx(2 / 3), pytest.approx(1 / 3)]
    with pytest.raises(ValueError):
        linear_decay_lr(1.0, -1, 4)
