"""Structure-centred patches at fixed VS / cochlea shares: nnUNet's own data loader, the class drawn by our shares."""

from __future__ import annotations

from typing import Any

import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
import numpy as np
import pytest
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from tanq_ray.labels import COCHLEA, NNUNET_LABELS, VS
from tanq_ray.segment.structure_sampling import StructureShareLoader, loaders_with_structure_shares

SHAPE = (1, 64, 64)  # one slice: nnUNet's 2d loader works on pseudo-3d volumes


class InMemoryCases:
    """Stand-in for nnUNet's preprocessed dataset: two cases, one with a VS and a cochlea, one with a VS only."""

    def __init__(self, identifiers: list[str]) -> None:
        self.identifiers = identifiers

    def load_case(self, identifier: str) -> tuple[np.ndarray, np.ndarray, None, dict[str, Any]]:
        seg = np.zeros((1, *SHAPE), dtype=np.int16)
        seg[0, 0, 8:14, 8:14] = VS
        if identifier == "with_cochlea":
            seg[0, 0, 50:52, 50:52] = COCHLEA  # far from the VS: no 16-pixel patch holds both
        locations = {label: np.argwhere(seg == label) for label in (VS, COCHLEA)}
        return np.random.rand(1, *SHAPE).astype(np.float32), seg, None, {"class_locations": locations}


def _vs_share(loader: nnUNetDataLoader, batches: int = 60) -> float:
    """Share of the drawn patches that hold a VS (every patch is structure-centred)."""
    holds_vs, holds_cochlea = 0, 0
    for _ in range(batches):
        seg = np.asarray(loader.generate_train_batch()["target"])
        holds_vs += int((seg == VS).any(axis=tuple(range(1, seg.ndim))).sum())
        holds_cochlea += int((seg == COCHLEA).any(axis=tuple(range(1, seg.ndim))).sum())
    assert holds_vs + holds_cochlea == batches * loader.batch_size  # centred on exactly one structure each
    return holds_vs / (holds_vs + holds_cochlea)


def _loader(build: type[nnUNetDataLoader] | Any, case: str, **kwargs: Any) -> nnUNetDataLoader:
    return build(
        InMemoryCases([case]), 8, (16, 16), (16, 16), LabelManager(NNUNET_LABELS, regions_class_order=None),
        oversample_foreground_percent=1.0, **kwargs,
    )  # fmt: skip


def test_structure_centred_patches_follow_the_shares_where_nnunet_draws_evenly() -> None:
    np.random.seed(0)
    assert _vs_share(_loader(nnUNetDataLoader, "with_cochlea")) == pytest.approx(0.5, abs=0.08)
    shared = _loader(StructureShareLoader, "with_cochlea", structure_shares={VS: 0.25, COCHLEA: 0.75})
    assert _vs_share(shared) == pytest.approx(0.25, abs=0.08)


def test_a_case_without_the_drawn_structure_gets_the_one_it_has() -> None:
    np.random.seed(0)
    shared = _loader(StructureShareLoader, "vs_only", structure_shares={VS: 0.25, COCHLEA: 0.75})
    assert _vs_share(shared, batches=10) == 1.0


def test_shares_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        _loader(StructureShareLoader, "with_cochlea", structure_shares={VS: 0.5, COCHLEA: 0.6})


def test_the_trainers_loaders_take_the_shares_only_while_open() -> None:
    with loaders_with_structure_shares({VS: 0.25, COCHLEA: 0.75}):
        built = _loader(nnunet_trainer_module.nnUNetDataLoader, "with_cochlea")
    assert isinstance(built, StructureShareLoader) and built.structure_probabilities.tolist() == [0.25, 0.75]
    assert nnunet_trainer_module.nnUNetDataLoader is nnUNetDataLoader
