"""Training behaviour of the translators on toy slices: losses fall, the SegDecoder learns, resume is exact."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tanq_ray.models.ablations import ABLATION_ROWS, ablation_config
from tanq_ray.models.base import Batch, TranslatorModel
from tanq_ray.models.config import CycleGANConfig, OptimConfig, TanqConfig
from tanq_ray.models.registry import build_model
from tanq_ray.models.synthetic import synthetic_batch

SLICES = synthetic_batch(8, 64, seed=0)
FAST = OptimConfig(lr=2e-3)  # a higher rate than the paper's, to learn within a test's budget


def _tiny_tanq(**overrides) -> TanqConfig:
    base = dict(ngf=8, ndf=8, n_blocks=2, nce_layers=(0, 4, 8, 12, 13), num_patches=64, optim=FAST)
    return TanqConfig(**(base | overrides))


def _tiny_cyclegan(**overrides) -> CycleGANConfig:
    return CycleGANConfig(**(dict(ngf=8, ndf=8, n_blocks=2, optim=FAST) | overrides))


def _batch(step: int, size: int = 4) -> Batch:
    """Alternating halves of the 8 labelled slices, and a rotating set of unpaired targets."""
    source = (torch.arange(size) + size * (step % 2)) % 8
    target = (torch.arange(size) + 3 * step) % 8
    return {
        "source": SLICES["source"][source],
        "source_label": SLICES["source_label"][source],
        "target": SLICES["target"][target],
    }


def _train(model: TranslatorModel, steps: int, size: int = 4) -> list[dict[str, float]]:
    torch.manual_seed(0)
    return [model.step(_batch(i, size)) for i in range(steps)]


def _mean(history: list[dict[str, float]], key: str) -> float:
    return sum(h[key] for h in history) / len(history)


def _dice(prediction: torch.Tensor, label: torch.Tensor, value: int) -> float:
    p, t = prediction == value, label == value
    return float(2 * (p & t).sum() / (p.sum() + t.sum()).clamp_min(1))


def test_tanq_short_training_reduces_patch_nce():
    torch.manual_seed(0)
    config = _tiny_tanq()
    history = _train(build_model("tanq", config), 60, size=2)
    assert all(math.isfinite(v) for h in history for v in h.values())
    chance = math.log(config.num_patches)  # PatchNCE of embeddings that cannot tell positions apart
    for key in ("nce_x", "nce_y"):
        assert _mean(history[-10:], key) < min(0.9 * _mean(history[:10], key), chance), key
    assert _mean(history[-10:], "seg") < 0.5 * _mean(history[:10], "seg")


def test_cyclegan_short_training_reduces_cycle_losses():
    torch.manual_seed(0)
    history = _train(build_model("cyclegan", _tiny_cyclegan()), 40, size=2)
    for key in ("cycle_A", "cycle_B"):
        assert _mean(history[-10:], key) < 0.6 * _mean(history[:10], key), key


@pytest.mark.slow
def test_tanq_learns_to_segment_and_translate_in_a_few_hundred_steps():
    torch.manual_seed(0)
    model = build_model("tanq", _tiny_tanq(ngf=16, ndf=16, n_blocks=3, nce_layers=(0, 4, 8, 13, 14)))
    history = _train(model, 300)
    assert _mean(history[-20:], "nce_x") < 0.75 * _mean(history[:20], "nce_x")
    prediction = model.segment(SLICES["source"], SLICES["source_label"])
    vs_share = float((SLICES["source_label"] == 1).float().mean())  # chance Dice is about this
    assert _dice(prediction, SLICES["source_label"], 1) > max(0.5, 20 * vs_share)


@pytest.mark.slow
def test_cyclegan_reduces_cycle_losses_over_a_few_hundred_steps():
    torch.manual_seed(0)
    history = _train(build_model("cyclegan", _tiny_cyclegan(ngf=16, ndf=16, n_blocks=3)), 300)
    for key in ("cycle_A", "cycle_B"):
        assert _mean(history[-20:], key) < 0.4 * _mean(history[:20], key), key


@pytest.mark.parametrize(
    "name, config",
    [
        ("tanq", _tiny_tanq()),
        ("tanq", _tiny_tanq(patch_select="random", encoder_norm="in", decoder_norm="in", segdecoder=False)),
        ("cyclegan", _tiny_cyclegan(pool_size=3)),
    ],
)
def test_state_dict_round_trip_reproduces_the_next_step(name, config):
    torch.manual_seed(0)
    original = build_model(name, config)
    for i in range(4):  # fills CycleGAN's pool past its size
        original.step(_batch(i, size=2))
    state = copy.deepcopy(original.state_dict())
    torch.manual_seed(123)  # different initial weights
    restored = build_model(name, config)
    restored.load_state_dict(state)
    assert restored.steps == original.steps == 4
    batch = _batch(7, size=2)
    torch.manual_seed(5)
    expected = original.step(batch)
    torch.manual_seed(5)
    assert restored.step(batch) == expected


def test_state_dict_refuses_another_model():
    with pytest.raises(ValueError, match="cyclegan"):
        build_model("tanq", _tiny_tanq()).load_state_dict(build_model("cyclegan", _tiny_cyclegan()).state_dict())


def test_every_ablation_row_builds_and_steps():
    assert list(ABLATION_ROWS) == ["cut", "qs_attn", "cyclegan", "tanq_wo_rain", "tanq_wo_segdecoder", "tanq"]
    for row in ABLATION_ROWS:
        small = _tiny_tanq() if ABLATION_ROWS[row][0] == "tanq" else _tiny_cyclegan()
        name, config = ablation_config(row, small)
        losses = build_model(name, config).step(_batch(0, size=1))
        assert losses and all(v == v for v in losses.values())  # no NaN
    assert ablation_config("tanq_wo_rain")[1].decoder_norm == "rn"
    assert ablation_config("qs_attn")[1].patch_select == "qs_global"


def test_learning_rate_schedule_hook():
    model = build_model("tanq", _tiny_tanq(epochs=10))
    assert model.set_epoch(0) == model.learning_rate == 2e-3
    assert model.set_epoch(9) == pytest.approx(2e-3 / 6)
    assert all(g["lr"] == pytest.approx(2e-3 / 6) for o in model.optimizers.values() for g in o.param_groups)
    model.set_learning_rate(1e-5)
    assert model.learning_rate == 1e-5
