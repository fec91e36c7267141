"""Weight initialisation of the public CUT/CycleGAN code (``init_type``, ``init_gain``)."""

from __future__ import annotations

from typing import Literal

from torch import nn

InitType = Literal["normal", "xavier"]


def init_weights(net: nn.Module, init_type: InitType = "normal", gain: float = 0.02) -> nn.Module:
    """Draw every conv / transposed-conv / linear weight (N(0, gain) or Xavier-normal with ``gain``); zero biases."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "normal":
                nn.init.normal_(module.weight, 0.0, gain)
            else:
                nn.init.xavier_normal_(module.weight, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net
