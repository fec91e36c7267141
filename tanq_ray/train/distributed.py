"""Data-parallel gradient averaging for models that own their optimisers.

The translators call several generator methods per step and step their own
optimisers, so wrapping networks in ``DistributedDataParallel`` would not sync
them. Instead each rank starts from identical weights (same seed) and
:func:`average_gradients`, installed as the model's ``gradient_hook``, averages
every gradient over the ranks right before each optimiser step: one
``all_reduce`` of a flattened buffer per optimiser (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch.optim import Optimizer


def average_gradients(optimizers: Sequence[Optimizer]) -> None:
    """Replace each gradient of ``optimizers`` by its mean over all ranks of the default process group."""
    world = dist.get_world_size()
    for optimizer in optimizers:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            continue
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
