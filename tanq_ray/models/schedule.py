"""Learning-rate policy of the public CUT/CycleGAN code (``--lr_policy linear``)."""

from __future__ import annotations


def linear_decay_lr(base_lr: float, epoch: int, total_epochs: int) -> float:
    """Learning rate for 0-based ``epoch`` of ``total_epochs``.

    Constant ``base_lr`` for the first ``total_epochs // 2`` epochs, then linear
    towards 0, which it reaches at ``epoch == total_epochs`` (the last epoch
    trains at ``base_lr / (decay_epochs + 1)``, as in the public code).
    """
    if total_epochs < 1 or epoch < 0:
        raise ValueError(f"need total_epochs >= 1 and epoch >= 0, got epoch={epoch} of {total_epochs}")
    decay_epochs = total_epochs - total_epochs // 2
    return base_lr * min(1.0, max(0.0, (total_epochs - epoch) / (decay_epochs + 1)))
