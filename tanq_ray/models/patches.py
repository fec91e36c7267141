"""Which feature positions enter PatchNCE, and the projector that embeds them.

Random selection is CUT's. QS-Attn global selection (PAPER.md §1, eq. 9):
``Q`` = a layer's features reshaped ``HW x C``, ``A = softmax(Q Kᵀ)`` with
``K = Qᵀ``, entropy of each row ``H(i) = -Σ_j A(i, j) log A(i, j)``, keep the
``N`` lowest-entropy rows. As in the public QS-Attn, a selected patch is the
attention-weighted sum ``A[i, :] @ V`` of the layer's features rather than the
feature at ``i``, and the *source* image's rows of ``A`` are applied to the
translated image's features too, so queries and keys share positions and
weights. Gradients flow through those rows (the public code does not detach
them); only the entropy ranking is computed without autograd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PatchSelect = Literal["random", "qs_global"]


@dataclass
class PatchSelection:
    """The patches taken from one layer's ``(B, C, h, w)`` features."""

    indices: Tensor
    """``(B, N)`` int64 flat positions in ``h * w`` (row-major)."""
    grid: tuple[int, int]
    """``(h, w)`` of the feature map."""
    attention: Tensor | None = None
    """QS only: ``(B, N, h * w)`` rows of ``A`` at ``indices``; a patch is ``attention @ features``."""


def flatten_positions(features: Tensor) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, h * w, C)``: one row per position (the ``Q`` of eq. 9)."""
    return features.flatten(2).transpose(1, 2)


def random_selection(features: Tensor, num_patches: int) -> PatchSelection:
    """CUT: ``min(N, h*w)`` distinct positions drawn uniformly, independently per sample."""
    batch, _, h, w = features.shape
    scores = torch.rand(batch, h * w, device=features.device)
    return PatchSelection(scores.argsort(dim=1)[:, : min(num_patches, h * w)], (h, w))


@torch.no_grad()
def attention_entropy(features: Tensor) -> Tensor:
    """Entropy of each row of ``A = softmax(Q Qᵀ)`` (eq. 9): ``(B, C, h, w)`` -> ``(B, h * w)``."""
    q = flatten_positions(features)
    log_a = torch.log_softmax(q @ q.transpose(1, 2), dim=-1)
    return -(log_a.exp() * log_a).sum(dim=-1)


@torch.no_grad()
def streamed_attention_entropy(features: Tensor, chunk_rows: int = 512) -> Tensor:
    """:func:`attention_entropy` over ``chunk_rows`` rows of ``A`` at a time, never the whole ``(h*w)²`` matrix.

    A row's entropy needs only that row's softmax, so peak memory is
    ``B x chunk_rows x h*w`` instead of ``B x (h*w)²``; the result is the same.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    q = flatten_positions(features)
    keys = q.transpose(1, 2)
    entropy = q.new_empty(q.shape[:2], dtype=torch.promote_types(q.dtype, torch.float32))
    for start in range(0, q.shape[1], chunk_rows):
        log_a = torch.log_softmax(q[:, start : start + chunk_rows] @ keys, dim=-1)
        entropy[:, start : start + chunk_rows] = -(log_a.exp() * log_a).sum(dim=-1)
    return entropy


def qs_global_selection(features: Tensor, num_patches: int, chunk_rows: int | None = None) -> PatchSelection:
    """QS-Attn global: the ``min(N, h*w)`` lowest-entropy rows of ``A`` (eq. 9), lowest first.

    Only the kept rows of ``A`` are formed with autograd (a row's softmax needs
    only that row), which avoids holding the ``(h*w)²`` matrix for backward.
    ``chunk_rows``: rank by :func:`streamed_attention_entropy` with that many
    rows at a time (``None``: the whole matrix at once).
    """
    _, _, h, w = features.shape
    keep = min(num_patches, h * w)
    entropy = attention_entropy(features) if chunk_rows is None else streamed_attention_entropy(features, chunk_rows)
    indices = entropy.topk(keep, dim=1, largest=False, sorted=True).indices
    q = flatten_positions(features)
    rows = q.gather(1, indices.unsqueeze(-1).expand(-1, -1, q.shape[-1]))
    attention = torch.softmax(rows @ q.transpose(1, 2), dim=-1)
    return PatchSelection(indices, (h, w), attention)


def gather_patches(features: Tensor, selection: PatchSelection) -> Tensor:
    """The selected patches of ``(B, C, h, w)`` features as ``(B, N, C)``.

    Random: the features at ``selection.indices``. QS: ``A_rows @ V`` with the
    selection's attention rows (possibly computed on another image).
    """
    values = flatten_positions(features)
    if selection.attention is not None:
        return selection.attention @ values
    return values.gather(1, selection.indices.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


class PatchSampler:
    """Selection policy over the NCE layers: QS global on the last ``qs_layers``, random on the others."""

    def __init__(self, num_patches: int = 256, mode: PatchSelect = "qs_global", qs_layers: int = 2) -> None:
        self.num_patches, self.mode, self.qs_layers = num_patches, mode, qs_layers

    def select(self, features: Sequence[Tensor]) -> list[PatchSelection]:
        """One selection per layer, computed on the source (key) features."""
        first_qs = len(features) - self.qs_layers if self.mode == "qs_global" else len(features)
        return [
            qs_global_selection(f, self.num_patches) if k >= first_qs else random_selection(f, self.num_patches)
            for k, f in enumerate(features)
        ]


class PatchProjector(nn.Module):
    """CUT's ``netF``: one ``Linear(C_l, dim) -> ReLU -> Linear(dim, dim)`` per NCE layer, then L2 norm.

    Built eagerly from the layers' channel counts; 559,872 parameters for
    channels ``[1, 128, 256, 256, 256]`` and ``dim=256``.
    """

    def __init__(self, channels: Sequence[int], dim: int = 256) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) for c in channels)

    def forward(self, patches: Sequence[Tensor]) -> list[Tensor]:
        """Per layer ``(B, N, C_l)`` -> ``(B, N, dim)`` unit vectors."""
        return [F.normalize(mlp(p), dim=-1) for mlp, p in zip(self.mlps, patches, strict=True)]
