"""Plain-data configuration of the two translators (no Ray, no torch).

Every translator row of the paper's ablation table (PAPER.md Table 2) is one
config: CUT is a :class:`TanqConfig` with ``patch_select=random,
encoder_norm=in, decoder_norm=in, segdecoder=false``; QS-Attn switches
``patch_select`` to ``qs_global``; TANQ is the default; CycleGAN is a
:class:`CycleGANConfig`. ``tanq_ray.models.ablations.ABLATION_ROWS`` lists them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator



def encoder_stem_layers(antialias: bool) -> int:
    """Encoder layers before the first residual block, in CUT's indexing (see tanq_ray.models.generator).

    0 reflection pad, 1-3 stem conv/norm/ReLU, then two downsamplings of 4 layers
    (conv, norm, ReLU, blur-pool) with ``antialias`` or of 3 (stride-2 conv, norm, ReLU).
    """
    return 12 if antialias else 10


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
    n_blocks: int = Field(
        6, ge=1, description="ResNet blocks in the generator: 6 gives the paper's 8.219M TANQ generator "
        "(docs/translators.md, 'Parameter counts'); 9 is the public CUT/QS-Attn default",
    )
    n_layers_d: int = Field(3, ge=1, description="PatchGAN strided layers (3 = 70x70 receptive field)")
    encoder_norm: Literal["in", "rn"] = Field(
        "rn", description="in: instance norm; rn: region norm over {cochlea, others} (eq. 1-3)"
    )
    decoder_norm: Literal["in", "rn", "rn_rain"] = Field(
        "rn_rain",
        description="in: instance norm; rn: region IN over {vs, cochlea, others} (eq. 4-5); "
        "rn_rain: rn then the VS takes the others' mean/std (eq. 6-7)",
    )
    region_affine: bool = Field(
        True,
        description="region norms scale and shift each region with learnable weights (RN-B, the RN paper's basic "
        "form); false: normalisation only, so a region cannot be given its own brightness",
    )
    segdecoder: bool = Field(True, description="segmentation head on the encoder output, cross-entropy (eq. 8)")
    patch_select: Literal["random", "qs_global"] = Field(
        "qs_global", description="random: CUT sampling; qs_global: lowest-entropy attention rows (eq. 9)"
    )
    antialias: bool = Field(
        True,
        description="blur-pool down- and upsampling in G and D, the public CUT/QS-Attn default; "
        "false: stride-2 convs and transposed convs (CUT's --no_antialias --no_antialias_up)",
    )
    nce_layers: tuple[int, ...] = Field(
        (0, 4, 8, 12, 16),
        description="encoder layers whose features enter PatchNCE, in CUT's indexing: 0 padded input, "
        "with antialias 4 and 8 the two downsampling convs and 12 + k residual block k (from 0); "
        "without, 4 and 7 the stride-2 convs, 8 the norm after the second and 10 + k residual block k",
    )
    qs_layers: int = Field(
        2, ge=0, description="with patch_select=qs_global: how many of the last nce_layers use QS selection"
    )
    num_patches: int = Field(256, ge=1, description="patches per NCE layer")
    nce_temperature: float = Field(0.07, gt=0)
    projector_dim: int = Field(256, ge=1)
    nce_identity: bool = Field(True, description="identity PatchNCE on real hrT2 (L_con^Y)")
    lambda_gan: float = Field(1.0, ge=0)
    lambda_nce: float = Field(1.0, ge=0)
    lambda_seg: float = Field(1.0, ge=0)
    init_type: Literal["normal", "xavier"] = Field("xavier", description="weight init of G, D and F (CUT default)")
    init_gain: float = Field(0.02, gt=0, description="std (normal) or gain (xavier) of the weight init")

    @model_validator(mode="after")
    def _nce_layers_inside_encoder(self) -> "TanqConfig":
        layers = self.nce_layers
        if not layers or list(layers) != sorted(set(layers)) or layers[0] < 0:
            raise ValueError(
                f"nce_layers must be distinct non-negative layer indices in increasing order, got {list(layers)}"
            )
        last = encoder_stem_layers(self.antialias) + self.n_blocks - 1
        if layers[-1] > last:
            raise ValueError(
                f"nce_layers {list(layers)} reach past the encoder: with n_blocks={self.n_blocks} "
                f"and antialias={self.antialias} the last encoder layer is {last}"
            )
        if self.qs_layers > len(layers):
            raise ValueError(f"qs_layers={self.qs_layers} exceeds the {len(layers)} nce_layers")
        return self


class CycleGANConfig(StrictModel):
    """CycleGAN translator, the second view (PAPER.md §2)."""

    epochs: int = Field(200, ge=1, description="total epochs; lr constant for the first half, then linear to 0")
    optim: OptimConfig = OptimConfig()
    ngf: int = Field(64, ge=1)
    ndf: int = Field(64, ge=1)
    n_blocks: int = Field(9, ge=1)
    n_layers_d: int = Field(3, ge=1)
    antialias: bool = Field(
        False,
        description="blur-pool down- and upsampling in G and D; false (the original CycleGAN code): "
        "stride-2 convs and transposed convs",
    )
    lambda_cycle: float = Field(10.0, ge=0)
    lambda_identity: float = Field(0.5, ge=0, description="relative to lambda_cycle, as in the public CycleGAN")
    pool_size: int = Field(50, ge=0, description="image pool for the discriminators; 0 disables it")
    init_type: Literal["normal", "xavier"] = Field("normal", description="weight init of G and D (CycleGAN default)")
    init_gain: float = Field(0.02, gt=0, description="std (normal) or gain (xavier) of the weight init")


class ModelsConfig(StrictModel):
    """Settings of each translator, keyed by its name: the one list of translators (see TRANSLATOR_NAMES)."""

    tanq: TanqConfig = TanqConfig()
    cyclegan: CycleGANConfig = CycleGANConfig()


TRANSLATOR_NAMES: tuple[str, ...] = tuple(ModelsConfig.model_fields)
"""Every translator, in the order stages, views and tables list them. A new translator is a field above
plus its model class in :mod:`tanq_ray.models.registry`; config validation, export, the pipeline's stages
and MLflow tags all read these."""
TranslatorName = Literal[TRANSLATOR_NAMES]  # type: ignore[valid-type]
CONFIG_TYPES: dict[str, type[StrictModel]] = {name: field.annotation for name, field in ModelsConfig.model_fields.items()}
