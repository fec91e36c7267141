"""Our nnUNet trainer: nnUNet's default trainer with the schedule from ``SegmentConfig`` and MLflow logging.

Everything nnUNet does stays as it is (Dice + CE loss with deep supervision,
SGD with poly lr, nnUNet's augmentation, sliding-window final validation; paper
section 3, step 2). What changes:

- epochs, iterations per epoch, batch size and initial lr come from
  :meth:`TanqTrainer.configure` with a :class:`~tanq_ray.segment.schedule.FoldSchedule`
  built from ``SegmentConfig`` (so a tiny run finishes in minutes on CPU);
  validation draws one patch batch per five training iterations, as nnUNet's
  50 per 250 do;
- the schedule may pick nnUNet's AdamW variant (``nnUNetTrainerAdam``:
  AdamW with amsgrad, the same poly lr) instead of SGD: on a CPU budget of a
  few hundred iterations SGD has not left the all-background phase yet;
- the schedule may add :class:`~tanq_ray.segment.structure_contrast.StructureContrastTransform`
  to nnUNet's training augmentation, right after its spatial transforms:
  each labelled structure at a random contrast to its surroundings, so that a
  model trained on translations does not depend on how a translator rendered
  their brightness; and :class:`~tanq_ray.segment.structure_texture.StructureTextureTransform`
  after it: a smooth random texture inside the VS, whose translations are
  smoother inside than real VS;
- the schedule may fix the share of VS and cochlea among the patches
  nnUNet centres on a structure
  (:class:`~tanq_ray.segment.structure_sampling.StructureShareLoader`),
  instead of nnUNet's choice among the structures each case holds;
- the schedule may turn off test-time mirroring (nnUNet averages the network
  over all mirrorings of the input, 4 passes in 2d, 8 in 3d), for the final
  validation and, through the checkpoint, for prediction; training
  augmentation still mirrors;
- ``checkpoint_latest.pth`` is written every ``save_every`` epochs (at most 20
  times per run, at least every 50 epochs as in nnUNet) and atomically, so a
  killed process never leaves a truncated checkpoint to resume from; fold
  "all" writes no ``checkpoint_best.pth`` (nnUNet picks "best" by the
  validation pseudo-Dice, and fold "all" validates on its training cases; it
  was rewritten after nearly every epoch, about a second each on a CPU);
- nnUNet's ``progress.png`` is drawn at most once a minute and after the last
  epoch, rather than after every epoch (drawing it takes about a second of
  CPU, a tenth of a CPU epoch of the tiny configuration; a GPU epoch of the
  paper's lasts longer than a minute, so there it is still drawn every epoch);
- each epoch's train loss, val loss and pseudo-Dice (nnUNet's ``mean_fg_dice``,
  its moving average ``ema_fg_dice`` and one value per class) go to the fold's
  MLflow run with step = epoch, through a background sender, so that a
  tracking outage delays them instead of stopping the fold.

nnUNet reads ``__init__``'s signature to rebuild a trainer from a checkpoint,
so the constructor repeats nnUNet's parameters exactly and takes nothing else.
Importing this module imports nnunetv2: only nnUNet tasks do (see
:mod:`tanq_ray.segment.folders`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam

from tanq_ray.io_utils import atomic_path
from tanq_ray.labels import COCHLEA, VS
from tanq_ray.segment.schedule import FoldSchedule
from tanq_ray.segment.structure_contrast import StructureContrastTransform
from tanq_ray.segment.structure_sampling import loaders_with_structure_shares
from tanq_ray.segment.structure_texture import StructureTextureTransform
from tanq_ray.tracking_buffer import BackgroundLog

TRAIN_PER_VALIDATION_ITERATION = 5  # nnUNet: 250 training and 50 validation iterations per epoch
MAX_CHECKPOINTS_PER_RUN = 20
NNUNET_SAVE_EVERY = 50
PLOT_INTERVAL_SECONDS = 60.0


def checkpoint_interval(epochs: int) -> int:
    """Epochs between ``checkpoint_latest.pth`` writes: ``epochs / 20`` within [1, 50]."""
    return max(1, min(NNUNET_SAVE_EVERY, epochs // MAX_CHECKPOINTS_PER_RUN))


class SparseProgressLogger(MetaLogger):
    """nnUNet's logger, drawing ``progress.png`` at most every ``interval`` seconds and after the last epoch."""

    def __init__(self, logger: MetaLogger, epochs: int, interval: float = PLOT_INTERVAL_SECONDS) -> None:
        self.__dict__.update(logger.__dict__)  # same loggers and logged values, no second set of loggers
        self.epochs = epochs
        self.interval = interval
        self.last_drawn = time.monotonic()

    def plot_progress_png(self, output_folder: str) -> None:
        finished = len(self.get_value("epoch_end_timestamps", step=None))
        if finished == self.epochs or time.monotonic() - self.last_drawn >= self.interval:
            super().plot_progress_png(output_folder)
            self.last_drawn = time.monotonic()


def _step_name(step: BasicTransform) -> str:
    """A transform's class name; for one applied at random, the name of the transform inside."""
    return type(getattr(step, "transform", step)).__name__


def with_structure_appearance(pipeline: ComposeTransforms, steps: list[BasicTransform]) -> ComposeTransforms:
    """``pipeline`` with ``steps`` (structure contrast, VS texture) right after its spatial transforms, before noise and blur."""
    transforms = list(pipeline.transforms)
    position = next(i for i, step in enumerate(transforms) if isinstance(step, SpatialTransform)) + 1
    if position < len(transforms) and isinstance(transforms[position], Convert2DTo3DTransform):
        position += 1
    return ComposeTransforms(transforms[:position] + list(steps) + transforms[position:])


class TanqTrainer(nnUNetTrainer):
    """nnUNetTrainer with a configurable schedule, atomic checkpoints and per-epoch MLflow metrics."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.batch_size_override: int | None = None
        self.foreground_oversampling: float | None = None
        self.vs_patch_share: float | None = None
        self.test_time_mirroring = True
        self.optimizer_name = "sgd"
        self.structure_contrast: tuple[float, float] | None = None
        self.structure_contrast_probability = FoldSchedule.structure_contrast_probability
        self.vs_texture: tuple[float, float] | None = None
        self.training_augmentation = ""  # the transforms' names, once the data loaders are built
        self.run: BackgroundLog | None = None
        self.progress: Callable[[str], None] | None = None
        self.class_names = {value: name for name, value in dataset_json["labels"].items()}

    def configure(
        self, schedule: FoldSchedule, run: BackgroundLog | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        """Apply ``schedule``, log to ``run`` and tell ``progress`` each epoch; call once, before :meth:`initialize`."""
        if self.was_initialized:
            raise RuntimeError("TanqTrainer.configure must be called before initialize()")
        self.num_epochs = schedule.epochs
        self.num_iterations_per_epoch = schedule.iterations_per_epoch
        self.num_val_iterations_per_epoch = max(1, schedule.iterations_per_epoch // TRAIN_PER_VALIDATION_ITERATION)
        self.initial_lr = schedule.initial_lr
        self.batch_size_override = schedule.batch_size
        self.foreground_oversampling = schedule.foreground_oversampling
        self.vs_patch_share = schedule.vs_patch_share
        self.test_time_mirroring = schedule.test_time_mirroring
        self.optimizer_name = schedule.optimizer
        self.structure_contrast = schedule.structure_contrast
        self.structure_contrast_probability = schedule.structure_contrast_probability
        self.vs_texture = schedule.vs_texture
        self.save_every = checkpoint_interval(schedule.epochs)
        self.logger = SparseProgressLogger(self.logger, schedule.epochs)
        self.run = run
        self.progress = progress

    def start_from(self, checkpoint: Path) -> None:
        """Initialise, then take every network weight of ``checkpoint``, a finished model of the same plan.

        Self-training's warm start: the round goes on from what the previous
        round learned instead of from random weights. Unlike nnUNet's
        ``load_pretrained_weights`` (transfer to another task), the
        segmentation heads are kept too: the classes are the same.
        """
        if not checkpoint.is_file():
            raise FileNotFoundError(f"warm start: '{checkpoint}' does not exist; the model to start from must be finished")
        if not self.was_initialized:
            self.initialize()
        weights = torch.load(str(checkpoint), map_location=self.device, weights_only=False)["network_weights"]
        network = getattr(self.network, "_orig_mod", self.network)
        try:
            network.load_state_dict(weights)
        except RuntimeError as err:
            raise ValueError(f"warm start: '{checkpoint}' does not fit this network (another plan or width): {err}") from None

    def configure_optimizers(self):
        if self.optimizer_name == "adamw":
            return nnUNetTrainerAdam.configure_optimizers(self)  # nnUNet's own variant, same poly schedule
        return super().configure_optimizers()

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        augmentation = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.test_time_mirroring:
            self.inference_allowed_mirroring_axes = None  # training augmentation keeps its mirror axes
        return augmentation

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, *args, **kwargs):
        """nnUNet's training augmentation, plus the structure-contrast and VS-texture transforms the schedule asks for."""
        pipeline = nnUNetTrainer.get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, *args, **kwargs
        )
        appearance: list[BasicTransform] = []
        if self.structure_contrast is not None:
            appearance.append(
                StructureContrastTransform(
                    tuple(self.label_manager.foreground_labels), self.structure_contrast, self.structure_contrast_probability
                )
            )
        if self.vs_texture is not None:
            appearance.append(StructureTextureTransform(VS, self.vs_texture))
        if appearance:
            pipeline = with_structure_appearance(pipeline, appearance)
        self.training_augmentation = " -> ".join(map(_step_name, pipeline.transforms))  # nnUNet writes it to debug.json
        return pipeline

    def _set_batch_size_and_oversample(self) -> None:
        super()._set_batch_size_and_oversample()
        if self.batch_size_override is not None and not self.is_ddp:
            self.batch_size = self.batch_size_override
        if self.foreground_oversampling is not None:
            self.oversample_foreground_percent = self.foreground_oversampling

    def get_dataloaders(self):
        """nnUNet's loaders; with ``vs_patch_share``, structure-centred patches pick VS or cochlea at those shares."""
        if self.vs_patch_share is None:
            return super().get_dataloaders()
        with loaders_with_structure_shares({VS: self.vs_patch_share, COCHLEA: 1.0 - self.vs_patch_share}):
            return super().get_dataloaders()

    def save_checkpoint(self, filename: str) -> None:
        if self.fold == "all" and Path(filename).name == "checkpoint_best.pth":
            return  # "best" is chosen on validation data, which fold "all" lacks (its pseudo-Dice is on training data)
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)  # writes nothing (and says so)
            return
        with atomic_path(filename) as tmp:
            super().save_checkpoint(str(tmp))

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        super().on_epoch_end()
        if self.run is not None:
            self.run.log_metrics(self.epoch_metrics(epoch), step=epoch)
        if self.progress is not None:
            self.progress(f"epoch {epoch + 1}/{self.num_epochs}")

    def epoch_metrics(self, epoch: int) -> dict[str, float]:
        """The metrics of one finished epoch, with the same names in every fold and configuration."""
        value = self.logger.get_value
        metrics = {
            "train_loss": float(value("train_losses", step=epoch)),
            "val_loss": float(value("val_losses", step=epoch)),
            "pseudo_dice": float(value("mean_fg_dice", step=epoch)),
            "ema_pseudo_dice": float(value("ema_fg_dice", step=epoch)),
            "lr": float(value("lrs", step=epoch)),
        }
        for label, dice in zip(self.label_manager.foreground_labels, value("dice_per_class_or_region", step=epoch)):
            metrics[f"pseudo_dice_{self.class_names.get(label, label)}"] = float(dice)
        return metrics

