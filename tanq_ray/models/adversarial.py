"""The LSGAN discriminator update and generator term shared by the TANQ and CycleGAN models."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from torch import Tensor, nn
from torch.optim import Optimizer

from tanq_ray.models.losses import lsgan_loss


@contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """Forward passes inside the block record no gradients for ``net``'s parameters."""
    flags = [(p, p.requires_grad) for p in net.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def generator_adversarial_loss(discriminator: nn.Module, fake: Tensor) -> Tensor:
    """LSGAN loss pushing the scores of ``fake`` towards real; gradients reach the generator only."""
    with frozen(discriminator):
        return lsgan_loss(discriminator(fake), True)


def discriminator_loss(discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """``0.5 * (LSGAN(D(real), real) + LSGAN(D(fake), fake))``; ``fake`` is detached from its generator."""
    return 0.5 * (lsgan_loss(discriminator(real), True) + lsgan_loss(discriminator(fake.detach()), False))


def discriminator_backward(
    optimizer: Optimizer, matches: Sequence[tuple[nn.Module, Tensor, Tensor]]
) -> list[float]:
    """Gradients of the summed losses of ``(discriminator, real, fake)`` triples; returns each loss.

    Zeroes ``optimizer``'s gradients first; the caller takes the step.
    """
    optimizer.zero_grad(set_to_none=True)
    losses = [discriminator_loss(d, real, fake) for d, real, fake in matches]
    sum(losses).backward()
    return [loss.item() for loss in losses]
