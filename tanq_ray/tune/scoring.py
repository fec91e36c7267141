"""Score a trained translator in seconds: structure preservation and how it renders the VS and cochlea.

The structure score's slices are the same for every trial of a sweep (evenly
spaced over the ceT1 slices that contain a label), so scores are comparable
across rows. The contrast gaps translate every ingested ceT1 volume and
compare the VS's and cochlea's contrast to their surroundings with that of
labelled real hrT2 (:mod:`tanq_ray.evaluate.contrast`).
"""

from __future__ import annotations

from pathlib import Path

from typing import Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tanq_ray.data.shards import Manifest, tensor_column
from tanq_ray.evaluate.contrast import contrast_gaps, mean_contrasts
from tanq_ray.models.base import TranslatorModel
from tanq_ray.train.export import load_translator
from tanq_ray.tune.structure import structure_band, structure_score

HEAD_THRESHOLD = -0.95  # normalised intensity above which a pixel is inside the head
BATCH = 16


def labelled_slices(ingest_dir: Path, max_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_slices`` ceT1 slices with a VS or cochlea label, evenly spaced: images ``(N, H, W)`` f32, labels ``(N, H, W)``."""
    manifest = Manifest.read(ingest_dir)
    images, labels = [], []
    for path in manifest.shard_paths("ceT1"):
        table = pq.read_table(path, columns=["image", "label"])
        image, label = tensor_column(table, "image"), tensor_column(table, "label")
        keep = label.reshape(len(label), -1).max(axis=1) > 0
        images.append(image[keep])
        labels.append(label[keep])
    if not images or sum(len(i) for i in images) == 0:
        raise ValueError(f"the ingest at '{ingest_dir}' has no ceT1 slice with a label: nothing to score structure on")
    all_images, all_labels = np.concatenate(images), np.concatenate(labels)
    chosen = np.unique(np.linspace(0, len(all_images) - 1, min(max_slices, len(all_images))).round().astype(int))
    return all_images[chosen].astype(np.float32), all_labels[chosen]


def ceT1_volumes(ingest_dir: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every ingested ceT1 volume as its slices in order: images ``(N, H, W)`` f32, labels ``(N, H, W)``."""
    manifest = Manifest.read(ingest_dir)
    for volume in manifest.volumes:
        if volume.domain == "ceT1":
            table = pa.concat_tables([pq.read_table(manifest.root / shard, columns=["slice_index", "image", "label"]) for shard in volume.shards])
            order = np.argsort(table.column("slice_index").to_numpy())
            yield tensor_column(table, "image")[order].astype(np.float32), tensor_column(table, "label")[order]


def translate_slices(model: TranslatorModel, images: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """``(N, H, W)`` ceT1 slices and their labels -> ``(N, H, W)`` translations, ``BATCH`` slices at a time."""
    source, masks = torch.from_numpy(images), torch.from_numpy(labels).long()
    with torch.inference_mode():
        return torch.cat(
            [model.translate(source[i : i + BATCH, None], masks[i : i + BATCH])[:, 0].cpu() for i in range(0, len(source), BATCH)]
        )


def score_translator(
    generator: Path, ingest_dir: Path, max_slices: int, reference_contrast: Mapping[str, float] | None = None
) -> dict[str, float]:
    """``structure_score`` (band around the labels) and ``structure_score_head`` of ``generator`` on ceT1 slices.

    With ``reference_contrast`` (:func:`~tanq_ray.evaluate.contrast.mean_contrasts`
    of labelled real hrT2), also ``vs_contrast_gap`` and ``cochlea_contrast_gap``
    of the translated ceT1 volumes (0 = rendered as real hrT2 shows them).
    """
    images, labels = labelled_slices(ingest_dir, max_slices)
    model = load_translator(generator)
    source, masks = torch.from_numpy(images), torch.from_numpy(labels).long()
    translated = translate_slices(model, images, labels)
    radius = max(2, images.shape[-1] // 32)
    band = structure_score(source, translated, structure_band(masks, radius))
    head = structure_score(source, translated, source > HEAD_THRESHOLD)
    scores = {"structure_score": float(band.mean()), "structure_score_head": float(head.mean()), "score_slices": len(source)}
    if reference_contrast is not None:
        translations = ((translate_slices(model, image, label).numpy(), label) for image, label in ceT1_volumes(ingest_dir))
        scores |= contrast_gaps(mean_contrasts(translations), reference_contrast)
    return scores
