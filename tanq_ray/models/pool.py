"""CycleGAN's history of generated images, from which discriminators are updated."""

from __future__ import annotations

import torch
from torch import Tensor


class ImagePool:
    """Holds up to ``size`` past fakes; ``query`` returns a batch mixing new and stored ones.

    Each image of a query is returned as is while the pool fills; afterwards,
    with probability 1/2, it replaces a random stored image and that older image
    is returned instead. ``size=0`` returns the query unchanged. Draws come from
    torch's global generator, so seeding torch makes the pool reproducible.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[Tensor] = []

    def query(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` fakes (detached here) -> ``(B, C, H, W)`` for the discriminator."""
        if self.size == 0:
            return images.detach()
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()) < 0.5:
                slot = int(torch.randint(len(self.images), ()))
                out.append(self.images[slot])
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, list[Tensor]]:
        """The stored images (for resuming)."""
        return {"images": [image.cpu() for image in self.images]}

    def load_state_dict(self, state: dict[str, list[Tensor]], device: torch.device) -> None:
        """Restore :meth:`state_dict` onto ``device``."""
        self.images = [image.to(device) for image in state["images"]]
