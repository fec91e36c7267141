"""The rows of the paper's ablation (PAPER.md Table 2): translator rows, one config each, and segmentation rows.

``ABLATION_ROWS[row] = (model name, overrides of that model's default config)``.
The paper's "Multi-view" row is not a translator: it is CycleGAN and QS-Attn
used together at the segmentation stage; likewise its "Ours" rows pair the
TANQ variant below with CycleGAN (``SEGMENTATION_ROWS``).
"""

from __future__ import annotations

from typing import Any

from tanq_ray.models.config import CycleGANConfig, TanqConfig

_IN_ONLY = {"encoder_norm": "in", "decoder_norm": "in", "segdecoder": False}

ABLATION_ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "cut": ("tanq", {"patch_select": "random", **_IN_ONLY}),
    "qs_attn": ("tanq", {"patch_select": "qs_global", **_IN_ONLY}),
    "cyclegan": ("cyclegan", {}),
    "tanq_wo_rain": ("tanq", {"encoder_norm": "rn", "decoder_norm": "rn", "segdecoder": True}),
    "tanq_wo_segdecoder": ("tanq", {"encoder_norm": "rn", "decoder_norm": "rn_rain", "segdecoder": False}),
    "tanq": ("tanq", {"encoder_norm": "rn", "decoder_norm": "rn_rain", "segdecoder": True}),
}
"""Row -> (model, overrides). Paper names: CUT, QS-Attn, CycleGAN, Ours w/o RAIN, Ours w/o SegDecoder, Ours."""

SEGMENTATION_ROWS: dict[str, tuple[str, ...]] = {
    "cut": ("cut",),
    "cyclegan": ("cyclegan",),
    "qs_attn": ("qs_attn",),
    "multi_view": ("cyclegan", "qs_attn"),
    "tanq_wo_rain": ("cyclegan", "tanq_wo_rain"),
    "tanq_wo_segdecoder": ("cyclegan", "tanq_wo_segdecoder"),
    "tanq": ("cyclegan", "tanq"),
}
"""The segmentation rows of Table 2 -> the translator rows whose pseudo-hrT2 their nnUNet trains on (one view each).

Single-view rows use their translator alone; "Multi-view" is CycleGAN with
QS-Attn (the authors' earlier method); the three "Ours" rows pair CycleGAN with
a TANQ variant (paper section 3: the multi-view framework with TANQ in place of
QS-Attn).
"""

PAPER_NAMES: dict[str, str] = {
    "cut": "CUT",
    "cyclegan": "CycleGAN",
    "qs_attn": "QS-Attn",
    "multi_view": "Multi-view",
    "tanq_wo_rain": "Ours w/o RAIN",
    "tanq_wo_segdecoder": "Ours w/o SegDecoder",
    "tanq": "Ours",
}
"""How Table 2 names each segmentation row."""


def ablation_config(
    row: str, base: TanqConfig | CycleGANConfig | None = None
) -> tuple[str, TanqConfig | CycleGANConfig]:
    """``(model name, config)`` of ``row``: the row's overrides applied to ``base`` (default: that model's defaults)."""
    if row not in ABLATION_ROWS:
        raise ValueError(f"unknown ablation row '{row}': choose one of {list(ABLATION_ROWS)}")
    model, overrides = ABLATION_ROWS[row]
    config_type = TanqConfig if model == "tanq" else CycleGANConfig
    base = config_type() if base is None else base
    if not isinstance(base, config_type):
        raise TypeError(f"row '{row}' is a {model} model; base must be a {config_type.__name__}")
    return model, config_type.model_validate(base.model_dump() | overrides)
