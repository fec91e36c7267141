"""The interface a trainer drives: one object per translator that owns its networks, losses and optimisers.

A trainer needs only::

    model = build_model("tanq", config, device)       # tanq_ray.models.registry
    for epoch in range(config.epochs):
        model.set_epoch(epoch)                         # linear-decay learning rate
        for batch in loader:                           # dict: see Batch
            losses = model.step(batch)                 # one D + G update -> {name: float}
    fake = model.translate(images, masks)              # inference, generator only
    state = model.state_dict(); model.load_state_dict(state)   # resume

Models know nothing of Ray, data loading or logging.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Sequence, TypedDict

import torch
from torch import Tensor, nn
from torch.optim import Adam, Optimizer

from tanq_ray.models.config import OptimConfig
from tanq_ray.models.schedule import linear_decay_lr


class Batch(TypedDict):
    """One training batch (unpaired domains; the two batch sizes may differ)."""

    source: Tensor
    """``(B, 1, H, W)`` float in [-1, 1]: ceT1 slices."""
    source_label: Tensor
    """``(B, H, W)`` int64: 0 background, 1 VS, 2 cochlea (labels of ``source``)."""
    target: Tensor
    """``(B', 1, H, W)`` float in [-1, 1]: real hrT2 slices."""


def unpack_batch(batch: Batch, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """``(source, source_label, target)`` on ``device``, with shapes checked."""
    missing = {"source", "source_label", "target"} - set(batch)
    if missing:
        raise KeyError(f"batch lacks {sorted(missing)}; expected keys source, source_label, target")
    source, label, target = batch["source"], batch["source_label"], batch["target"]
    if source.ndim != 4 or source.shape[1] != 1 or target.ndim != 4 or target.shape[1] != 1:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} must be (B, 1, H, W)")
    if label.shape != (source.shape[0], *source.shape[2:]):
        expected = (source.shape[0], *source.shape[2:])
        raise ValueError(f"source_label {tuple(label.shape)} must be (B, H, W) = {expected}")
    to = {"device": device, "non_blocking": True}
    return source.to(dtype=torch.float32, **to), label.to(dtype=torch.long, **to), target.to(dtype=torch.float32, **to)


def adam(parameters: Any, optim: OptimConfig) -> Adam:
    """Adam with the config's learning rate and betas (paper §4.2: 2e-4, (0.5, 0.999))."""
    return Adam(parameters, lr=optim.lr, betas=(optim.beta1, optim.beta2))


@contextmanager
def evaluating(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` in eval mode inside the block, its previous mode restored after."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable scalars of ``net``."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


GradientHook = Callable[[Sequence[Optimizer]], None]
"""Called with the optimisers about to step, after backward: e.g. an all-reduce across data-parallel workers."""


class TranslatorModel(ABC):
    """Networks, losses and optimisers of one translator behind ``step`` / ``translate`` / state dicts.

    Subclasses fill ``nets`` and ``optimizers`` (name -> object) and set
    ``translator_name``, the key in ``nets`` of the ceT1 -> hrT2 generator.
    """

    name: ClassVar[str]
    translator_name: ClassVar[str]

    def __init__(self, config: Any, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.steps = 0
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, Optimizer] = {}
        self.gradient_hook: GradientHook | None = None

    @classmethod
    @abstractmethod
    def describe(cls, config: Any) -> dict[str, str]:
        """MLflow tags naming the configuration's ablation switches: ``norm``, ``segdecoder``, ``patch_select``."""

    # -- training ---------------------------------------------------------------------------
    @abstractmethod
    def step(self, batch: Batch) -> dict[str, float]:
        """One discriminator and one generator update on ``batch``; returns the losses by name."""

    def _apply_gradients(self, *optimizers: Optimizer) -> None:
        """Step ``optimizers``, after :attr:`gradient_hook` (if set) has seen their gradients."""
        if self.gradient_hook is not None:
            self.gradient_hook(optimizers)
        for optimizer in optimizers:
            optimizer.step()

    def set_learning_rate(self, lr: float) -> None:
        """Set the learning rate of every optimiser."""
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def set_epoch(self, epoch: int) -> float:
        """Apply the paper's schedule for 0-based ``epoch`` (:func:`linear_decay_lr`); returns the rate."""
        lr = linear_decay_lr(self.config.optim.lr, epoch, self.config.epochs)
        self.set_learning_rate(lr)
        return lr

    @property
    def learning_rate(self) -> float:
        """Current learning rate (all optimisers share it)."""
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    def _train_mode(self) -> None:
        for net in self.nets.values():
            net.train()

    # -- inference --------------------------------------------------------------------------
    @property
    def translator(self) -> nn.Module:
        """The ceT1 -> hrT2 generator."""
        return self.nets[self.translator_name]

    @torch.no_grad()
    def translate(self, images: Tensor, masks: Tensor | None = None) -> Tensor:
        """ceT1 ``(B, 1, H, W)`` in [-1, 1] -> pseudo-hrT2 ``(B, 1, H, W)``, generator only, eval mode.

        ``masks``: optional ``(B, H, W)`` int64 labels of ``images``; the TANQ
        generator uses them in its target-aware norms (without them its norms
        are instance norms), CycleGAN ignores them.
        """
        with evaluating(self.translator):
            masks = None if masks is None else masks.to(self.device, dtype=torch.long)
            return self._generate(images.to(self.device, dtype=torch.float32), masks)

    @abstractmethod
    def _generate(self, images: Tensor, masks: Tensor | None) -> Tensor:
        """Run the translator on ``images`` (called under no_grad, eval mode)."""

    # -- bookkeeping ------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per network, e.g. ``{"G": ..., "D": ..., "F": ...}``."""
        return {name: count_parameters(net) for name, net in self.nets.items()}

    def generator_parameters_count(self) -> int:
        """Parameters of the ceT1 -> hrT2 generator (with the SegDecoder when it has one)."""
        return count_parameters(self.translator)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, optimisers, step counter and model-specific state."""
        return {
            "model": self.name,
            "steps": self.steps,
            "nets": {name: net.state_dict() for name, net in self.nets.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a model of the same name and configuration."""
        if state.get("model") != self.name:
            raise ValueError(f"state of model '{state.get('model')}' cannot be loaded into '{self.name}'")
        for name, net in self.nets.items():
            net.load_state_dict(state["nets"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.steps = int(state["steps"])
        self._load_extra_state(state["extra"])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state` saved."""
