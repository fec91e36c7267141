"""What rank 0 records per epoch: metrics (step = epoch) and pictures in the training run's MLflow run."""

from __future__ import annotations

import logging
from typing import Any

from tanq_ray.models.base import Batch, TranslatorModel
from tanq_ray.models.visuals import patch_selection_figure, translation_grid
from tanq_ray.tracking_buffer import BackgroundLog
from tanq_ray.visuals import with_column_titles

log = logging.getLogger(__name__)


class EpochLog:
    """Logs to the run ``loop_config["run"]`` (a :class:`~tanq_ray.run_ref.RunRef`); one log line per epoch.

    Records go through a :class:`~tanq_ray.tracking_buffer.BackgroundLog`, so a
    tracking outage delays them instead of stopping training; :meth:`close`
    waits for the backlog when training ends.
    """

    def __init__(self, loop_config: dict[str, Any], model: TranslatorModel) -> None:
        self.model = model
        run = loop_config.get("run")
        self.run = BackgroundLog(run.handle()) if run is not None else None

    def close(self) -> None:
        """Send what is still waiting (up to a few minutes if the tracking server is down)."""
        if self.run is not None:
            self.run.close()

    def resumed(self, start_epoch: int) -> None:
        log.info("[%s] resuming from the checkpoint of epoch %d", self.model.name, start_epoch - 1)

    def epoch(self, epoch: int, metrics: dict[str, float], sample: Batch, draw: bool) -> None:
        """Write the epoch to the worker's log, its metrics to MLflow, and with ``draw`` its pictures (``sample``: the epoch's last batch)."""
        losses = " ".join(f"{k[5:]}={v:.3f}" for k, v in metrics.items() if k.startswith("loss_"))
        log.info(
            "[%s] epoch %d: %s | %.1f slices/s, stall %.0f %%", self.model.name, epoch, losses,
            metrics["slices_per_second"], 100 * metrics["stall_fraction"],
        )  # fmt: skip
        if self.run is None:
            return
        self.run.log_metrics({key: value for key, value in metrics.items() if key != "epoch"}, step=epoch)
        if draw:
            self._pictures(self.run, epoch, sample)

    def _pictures(self, run: BackgroundLog, epoch: int, sample: Batch) -> None:
        """ceT1 | pseudo-hrT2 | real hrT2 grid; for TANQ also where the patches of ``sample``'s step fell (Fig. 5).

        Logged as MLflow images with step = epoch under the same keys for every
        translator (``translation``, ``patches``), so the compare view lines them up.
        """
        source, label, target = sample["source"], sample["source_label"], sample["target"]
        translated = self.model.translate(source, label).cpu()
        grid = translation_grid(source, translated, target, label)
        run.log_image(with_column_titles(grid, ["ceT1 (VS red, cochlea blue)", f"{self.model.name} pseudo-hrT2", "real hrT2"]), "translation", epoch)
        selection = getattr(self.model, "last_selection", None)
        if selection:
            image, fractions = patch_selection_figure(source, label, selection)
            run.log_image(with_column_titles(image, [f"NCE layer {layer}" for layer in selection]), "patches", epoch)
            run.log_metrics(
                {f"patches_layer{layer}_{key}": value for layer, shares in fractions.items() for key, value in shares.items()},
                step=epoch,
            )
