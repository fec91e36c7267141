"""How each nnUNet fold trains: the schedule the driver builds from ``segment.*`` and hands to the fold tasks.

Its own module so that the trainer (:mod:`tanq_ray.segment.trainer`, which
imports nnunetv2) and the fold tasks that import the trainer lazily
(:mod:`tanq_ray.segment.folds`) both read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from tanq_ray.config import SegmentConfig


@dataclass(frozen=True)
class FoldSchedule:
    """How each fold trains; built from ``SegmentConfig`` in the driver, so only this travels to the tasks."""

    epochs: int
    iterations_per_epoch: int
    batch_size: int | None  # None = nnUNet's planned batch size
    initial_lr: float
    test_time_mirroring: bool = True  # nnUNet's default; off = 4x (2d) / 8x (3d) cheaper inference
    optimizer: str = "sgd"  # "sgd" (nnUNet's default) or "adamw" (nnUNet's nnUNetTrainerAdam)
    foreground_oversampling: float | None = None  # None = nnUNet's 0.33
    vs_patch_share: float | None = None  # None = nnUNet's choice among the structures a case holds
    augmentation_processes: int = 0  # nnUNet's nnUNet_n_proc_DA; 0 = augment in the training process
    structure_contrast: tuple[float, float] | None = None  # None = nnUNet's augmentation as it is
    structure_contrast_probability: float = SegmentConfig.model_fields["structure_contrast_probability"].default
    vs_texture: tuple[float, float] | None = None  # None = no texture added inside the VS

    @classmethod
    def from_settings(cls, settings: SegmentConfig) -> "FoldSchedule":
        return cls(
            epochs=settings.epochs,
            iterations_per_epoch=settings.iterations_per_epoch,
            batch_size=settings.batch_size,
            initial_lr=settings.initial_lr,
            test_time_mirroring=settings.test_time_mirroring,
            optimizer=settings.optimizer,
            foreground_oversampling=settings.foreground_oversampling,
            vs_patch_share=settings.vs_patch_share,
            augmentation_processes=settings.augmentation_processes,
            structure_contrast=settings.structure_contrast,
            structure_contrast_probability=settings.structure_contrast_probability,
            vs_texture=settings.vs_texture,
        )
