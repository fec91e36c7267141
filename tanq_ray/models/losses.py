"""Losses of the two translators: LSGAN, PatchNCE, L1 cycle/identity, segmentation cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Logit given to a query's own key among the negatives (in cosine units, before the temperature),
# which removes it from the negatives as the public PatchNCE loss does.
_SELF_NEGATIVE = -10.0


def lsgan_loss(prediction: Tensor, target_is_real: bool) -> Tensor:
    """Least-squares GAN loss: mean squared distance of the PatchGAN scores to 1 (real) or 0 (fake)."""
    target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)


def patch_nce_loss(query: Tensor, key: Tensor, temperature: float = 0.07) -> Tensor:
    """PatchNCE (InfoNCE over patches of one image), per patch.

    ``query``: ``(B, N, D)`` unit embeddings of the translated image's patches;
    ``key``: ``(B, N, D)`` unit embeddings of the same positions in the input
    (detached here: keys are targets). For patch ``i`` the positive is
    ``key[i]`` and the negatives are the other ``N - 1`` keys of the same
    image. Returns ``(B, N)`` cross-entropies of
    ``[q·k⁺, q·k⁻...] / temperature`` with the positive as class 0.
    """
    key = key.detach()
    batch, num, _ = query.shape
    positive = (query * key).sum(dim=-1, keepdim=True)
    negatives = query @ key.transpose(1, 2)
    eye = torch.eye(num, dtype=torch.bool, device=query.device)
    negatives = negatives.masked_fill(eye, _SELF_NEGATIVE)
    logits = torch.cat([positive, negatives], dim=-1) / temperature
    target = torch.zeros(batch * num, dtype=torch.long, device=query.device)
    return F.cross_entropy(logits.flatten(0, 1), target, reduction="none").view(batch, num)


def l1_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error: CycleGAN's cycle loss (eq. 11) and identity loss."""
    return F.l1_loss(prediction, target)


def segmentation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Pixel-wise cross-entropy of SegDecoder logits ``(B, 3, H, W)`` against labels ``(B, H, W)`` (eq. 8)."""
    return F.cross_entropy(logits, labels)
