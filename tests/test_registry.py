"""One list of translators: ModelsConfig's fields, read by the registry, config validation, export, stages and tags."""

from __future__ import annotations

import pytest

from tanq_ray.config import ConfigError, load_config
from tanq_ray.models.config import CONFIG_TYPES, TRANSLATOR_NAMES, CycleGANConfig, TanqConfig
from tanq_ray.models.registry import MODELS, model_tags
from tanq_ray.stages.train import TRAIN_STAGES
from tanq_ray.train.export import CONFIG_TYPES as EXPORT_TYPES


def test_every_reader_lists_the_same_translators() -> None:
    assert TRANSLATOR_NAMES == ("tanq", "cyclegan")
    assert tuple(MODELS) == tuple(CONFIG_TYPES) == tuple(EXPORT_TYPES) == TRANSLATOR_NAMES
    assert [stage.name for stage in TRAIN_STAGES] == [f"train-{name}" for name in TRANSLATOR_NAMES]
    assert CONFIG_TYPES == {"tanq": TanqConfig, "cyclegan": CycleGANConfig}
    assert load_config(None, []).segment.views == list(TRANSLATOR_NAMES)
    with pytest.raises(ConfigError, match="train.model"):
        load_config(None, ["train.model=pix2pix"])


def test_every_translator_is_tagged_with_the_same_names() -> None:
    for name in TRANSLATOR_NAMES:
        assert set(model_tags(name, CONFIG_TYPES[name]())) == {"model", "norm", "segdecoder", "patch_select"}
    assert model_tags("tanq", TanqConfig(encoder_norm="in"))["norm"] == "in/rn_rain"
