"""The per-worker Ray Train loop for either translator.

``train_loop_per_worker(loop_config)`` reads its shards of the ``source``
(ceT1 + labels) and ``target`` (hrT2) datasets, draws them independently
(unpaired), calls the model's ``step`` per batch, and once per epoch calls
``ray.train.report`` with the mean losses, throughput and the fraction of time
spent waiting for data. Every ``checkpoint_every`` epochs, and at the last
epoch, rank 0 attaches a checkpoint (model, optimisers, step, epoch); the last
one also holds the standalone generator (:mod:`tanq_ray.train.export`). A
restarted worker group (``FailureConfig``) or a new run with the same name
resumes from the latest checkpoint. Rank 0 logs each epoch to the MLflow run
named in ``loop_config``. The loop knows the model only through its
interface: ``step``, ``set_epoch``, ``translate``, state dicts.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import ray.train
import ray.train.torch
import torch

from tanq_ray.config import Config
from tanq_ray.data.augment import random_crop, random_flip, resize
from tanq_ray.data.readers import SliceCollate
from tanq_ray.models.base import Batch, TranslatorModel
from tanq_ray.models.registry import build_model
from tanq_ray.progress_board import worker_output
from tanq_ray.train.distributed import average_gradients
from tanq_ray.train.export import export_generator
from tanq_ray.train.progress import EpochLog

STATE_FILE = "state.pt"
TARGET_REUSE = 64  # target batches kept for reuse when the hrT2 shard is shorter than the ceT1 shard


def _load_checkpoint(model: TranslatorModel) -> int:
    """Restore the latest reported checkpoint into ``model``; returns the first epoch still to train."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location=model.device, weights_only=True)
    model.load_state_dict(state["model"])
    return int(state["epoch"]) + 1


def _target_batches(shard: Any, batch_size: int, collate: SliceCollate, buffer: int) -> Iterator[dict[str, torch.Tensor]]:
    """hrT2 batches for one epoch, then reused recent ones if the ceT1 shard is longer."""
    recent: deque[dict[str, torch.Tensor]] = deque(maxlen=TARGET_REUSE)
    for batch in shard.iter_torch_batches(
        batch_size=batch_size, collate_fn=collate, local_shuffle_buffer_size=buffer or None, drop_last=True
    ):
        recent.append(batch)
        yield batch
    if not recent:
        raise ValueError(f"this worker's hrT2 shard has fewer than batch_size={batch_size} slices")
    index = 0
    while True:
        yield recent[index % len(recent)]
        index += 1


def _run_epoch(
    model: TranslatorModel, source: Any, target: Any, config: Config, collate: SliceCollate, crops: torch.Generator
) -> tuple[dict[str, float], Batch]:
    """One pass over this worker's ceT1 shard: mean losses, steps, seconds spent waiting for data; the last batch.

    Both batches are augmented as ``train.load_size``, ``crop_size`` and ``flip`` say
    (:mod:`tanq_ray.data.augment`), with random draws from ``crops``.
    """
    train = config.train
    buffer = train.shuffle_buffer
    sources = iter(
        source.iter_torch_batches(
            batch_size=train.batch_size, collate_fn=collate, local_shuffle_buffer_size=buffer or None, drop_last=True
        )
    )
    targets = _target_batches(target, train.batch_size, collate, buffer)
    totals: dict[str, float] = defaultdict(float)
    steps, waiting = 0, 0.0
    while True:
        start = time.perf_counter()
        batch = next(sources, None)
        if batch is None:
            break
        target_batch = next(targets)
        if train.load_size is not None:
            batch, target_batch = (resize(b, train.load_size) for b in (batch, target_batch))
        if train.crop_size is not None and train.crop_size < batch["image"].shape[-1]:
            batch, target_batch = (random_crop(b, train.crop_size, crops) for b in (batch, target_batch))
        if train.flip:
            batch, target_batch = (random_flip(b, crops) for b in (batch, target_batch))
        waiting += time.perf_counter() - start
        last: Batch = {"source": batch["image"], "source_label": batch["label"], "target": target_batch["image"]}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=train.use_gpu and train.bf16):
            losses = model.step(last)
        for name, value in losses.items():
            totals[name] += value
        steps += 1
    targets.close()
    if steps == 0:
        raise ValueError(f"this worker's ceT1 shard has fewer than batch_size={train.batch_size} slices")
    means = {f"loss_{name}": total / steps for name, total in totals.items()}
    return means | {"steps": steps, "wait_seconds": waiting}, last


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point; ``loop_config`` holds the resolved config and where to log (see launcher).

    The worker's output goes to ``logs/<log_name>[-rank<r>].log`` under a
    quiet console (``train-<model>``, or the sweep trial's name); rank 0 posts
    the epoch to the progress display.
    """
    rank = ray.train.get_context().get_world_rank()
    with worker_output(loop_config["log_name"] + (f"-rank{rank}" if rank else "")) as progress:
        _train(loop_config, progress)


def _train(loop_config: dict[str, Any], progress: Callable[[str], None]) -> None:
    config = Config.model_validate(loop_config["config"])
    name = config.train.model
    model_config = getattr(config.models, name)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()

    torch.manual_seed(config.train.seed)  # identical initial weights on every rank
    model = build_model(name, model_config, ray.train.torch.get_device())
    if world > 1:
        model.gradient_hook = average_gradients
    start_epoch = _load_checkpoint(model)
    epoch_log = EpochLog(loop_config, model) if rank == 0 else None
    if epoch_log is not None and start_epoch > 0:
        epoch_log.resumed(start_epoch)

    collate = SliceCollate(int(loop_config["image_size"]))
    source, target = ray.train.get_dataset_shard("source"), ray.train.get_dataset_shard("target")
    epochs = model_config.epochs
    for epoch in range(start_epoch, epochs):
        if rank == 0:
            progress(f"epoch {epoch + 1}/{epochs}")
        lr = model.set_epoch(epoch)
        started = time.perf_counter()
        crops = torch.Generator().manual_seed(int(np.random.SeedSequence([config.train.seed, rank, epoch]).generate_state(1)[0]))
        result, last_batch = _run_epoch(model, source, target, config, collate, crops)
        seconds = time.perf_counter() - started
        metrics = {key: value for key, value in result.items() if key.startswith("loss_")} | {
            "epoch": epoch,
            "lr": lr,
            "epoch_seconds": seconds,
            "slices_per_second": result["steps"] * config.train.batch_size * world / seconds,
            "stall_fraction": result["wait_seconds"] / seconds,
            "resumed_from_epoch": start_epoch,
        }
        is_last = epoch == epochs - 1
        if rank == 0 and ((epoch + 1) % config.train.checkpoint_every == 0 or is_last):
            with tempfile.TemporaryDirectory() as folder:
                torch.save({"epoch": epoch, "model": model.state_dict()}, Path(folder) / STATE_FILE)
                if is_last:
                    export_generator(model, Path(folder), int(loop_config["image_size"]))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)
        if epoch_log is not None:
            epoch_log.epoch(epoch, metrics, last_batch, draw=(epoch + 1) % config.train.visual_every == 0 or is_last)
    if epoch_log is not None:
        epoch_log.close()
