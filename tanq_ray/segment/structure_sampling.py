"""Patches centred on a structure, the structure drawn at fixed shares rather than among those the case has.

nnUNet centres a share of each batch (``oversample_foreground_percent``) on a
voxel of one labelled class, drawn at equal chance among the classes the case
holds. How often the VS is seen then depends on which cases hold a cochlea.
In the adapted rows that is a property of the translations: where a
translation erased a cochlea and the piece is left unlabelled, the case holds
the VS only and every structure patch of it is a VS patch; where the piece is
redrawn, half of them become cochlea patches. With the erased pieces of the
demo's CycleGAN view redrawn, the VS went from 9/16 of the patches to 3/8
(docs/learning-on-a-cpu.md section 30).

:class:`StructureShareLoader` draws the class of each such patch from fixed
shares, so the balance between the structures is a setting and not a side
effect of what a translator drew. A case that lacks the drawn class gets
nnUNet's own choice. Importing this module imports nnunetv2: only the trainer
does.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np
import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader


class StructureShareLoader(nnUNetDataLoader):
    """nnUNet's data loader; a patch it must centre on a structure takes the class from ``structure_shares``.

    ``structure_shares``: label value -> share of the structure-centred
    patches, summing to 1. Everything else (which patches are structure-centred,
    the voxel drawn within the class, cropping, augmentation) is nnUNet's.
    """

    def __init__(self, *args: Any, structure_shares: Mapping[int, float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.structure_classes = [int(label) for label in structure_shares]
        shares = np.array([float(structure_shares[label]) for label in structure_shares])
        if len(shares) == 0 or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
            raise ValueError(f"structure_shares must be non-negative and sum to 1, got {dict(structure_shares)}")
        self.structure_probabilities = shares

    def get_bbox(
        self,
        data_shape: np.ndarray,
        force_fg: bool,
        class_locations: dict | None,
        overwrite_class: int | tuple[int, ...] | None = None,
        verbose: bool = False,
    ) -> tuple[list[int], list[int]]:
        """nnUNet's patch box; a structure-centred one is centred on the class drawn from the shares."""
        if force_fg and overwrite_class is None:
            drawn = np.random.choice(len(self.structure_classes), p=self.structure_probabilities)
            overwrite_class = self.structure_classes[drawn]
        return super().get_bbox(data_shape, force_fg, class_locations, overwrite_class, verbose)


@contextmanager
def loaders_with_structure_shares(structure_shares: Mapping[int, float]) -> Iterator[None]:
    """While open, the data loaders nnUNet's trainer builds are :class:`StructureShareLoader` with these shares.

    ``nnUNetTrainer.get_dataloaders`` builds its loaders by the module-level
    name ``nnUNetDataLoader`` and starts them before it returns, so the
    subclass has to be in place during the call; the name is restored after.
    """

    def build(*args: Any, **kwargs: Any) -> StructureShareLoader:
        return StructureShareLoader(*args, structure_shares=structure_shares, **kwargs)

    original = nnunet_trainer_module.nnUNetDataLoader
    nnunet_trainer_module.nnUNetDataLoader = build
    try:
        yield
    finally:
        nnunet_trainer_module.nnUNetDataLoader = original
