"""Plain-data configuration of the two translators (no Ray, no torch).

Every row of the paper's ablation table (PAPER.md Table 2) is one
:class:`TanqConfig`: CUT is ``patch_select=random, encoder_norm=in,
decoder_norm=in, segdecoder=false``; QS-Attn switches ``patch_select`` to
``qs_global``; TANQ is the default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and re-validates on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OptimConfig(StrictModel):
    """Adam settings shared by every translator network (paper §4.2)."""

    lr: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)


class TanqConfig(StrictModel):
    """TANQ / QS-Attn / CUT translator (PAPER.md §1)."""

    epochs: int = Field(400, ge=1, description="total epochs; lr constant for the first half, then linear to 0")
    optim: OptimConfig = OptimConfig()
    ngf: int = Field(64, ge=1, description="generator width")
    ndf: int = Field(64, ge=1, description="discriminator width")
    n_blocks: int = Field(9, ge=1, description="ResNet blocks in the generator")
    n_layers_d: int = Field(3, ge=1, description="PatchGAN strided layers (3 = 70x70 receptive field)")
    encoder_norm: Literal["in", "rn"] = "rn"
    decoder_norm: Literal["in", "rn", "rn_rain"] = "rn_rain"
    segdecoder: bool = True
    patch_select: Literal["random", "qs_global"] = "qs_global"
    num_patches: int = Field(256, ge=1, description="patches per NCE layer")
    nce_temperature: float = Field(0.07, gt=0)
    projector_dim: int = Field(256, ge=1)
    nce_identity: bool = Field(True, description="identity PatchNCE on real hrT2 (L_con^Y)")
    lambda_gan: float = Field(1.0, ge=0)
    lambda_nce: float = Field(1.0, ge=0)
    lambda_seg: float = Field(1.0, ge=0)


class CycleGANConfig(StrictModel):
    """CycleGAN translator, the second view (PAPER.md §2)."""

    epochs: int = Field(200, ge=1, description="total epochs; lr constant for the first half, then linear to 0")
    optim: OptimConfig = OptimConfig()
    ngf: int = Field(64, ge=1)
    ndf: int = Field(64, ge=1)
    n_blocks: int = Field(9, ge=1)
    n_layers_d: int = Field(3, ge=1)
    lambda_cycle: float = Field(10.0, ge=0)
    lambda_identity: float = Field(0.5, ge=0, description="relative to lambda_cycle, as in the public CycleGAN")
    pool_size: int = Field(50, ge=0, description="image pool for the discriminators; 0 disables it")


class ModelsConfig(StrictModel):
    """Settings of each registered translator, keyed by registry name."""

    tanq: TanqConfig = TanqConfig()
    cyclegan: CycleGANConfig = CycleGANConfig()
