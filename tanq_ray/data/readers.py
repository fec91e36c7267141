"""Ray Data readers of the ingest shards, one dataset per domain.

``read_domain(manifest, "ceT1")`` yields rows with ``image`` (float16,
H x W) and ``label`` (uint8, H x W); ``read_domain(manifest, "hrT2")`` yields
``image`` only. ``iter_torch_batches`` turns a block of rows into
``(B, H, W)`` tensors: each block's binary tensor columns are decoded with one
vectorised copy inside the read task (:func:`~tanq_ray.data.shards.decode_tensors`),
never row by row. :func:`to_model_inputs` gives them the shapes and dtypes the
translators take.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa
import torch

from tanq_ray.data.layout import Domain
from tanq_ray.data.shards import TENSOR_DTYPES, Manifest, decode_tensors

if TYPE_CHECKING:
    import ray.data

DOMAIN_COLUMNS: dict[str, list[str]] = {"ceT1": ["image", "label"], "hrT2": ["image"]}


def read_domain(
    manifest: Manifest | str | Path,
    domain: Domain,
    *,
    columns: Sequence[str] | None = None,
    shuffle_files: bool = False,
) -> "ray.data.Dataset":
    """A Ray dataset over every shard of ``domain`` listed in the manifest.

    ``columns`` defaults to the tensor columns of the domain; ``shuffle_files``
    randomises the file order (row-level shuffling is the trainer's choice).
    """
    import ray.data

    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    if domain not in DOMAIN_COLUMNS:
        raise ValueError(f"domain must be one of {sorted(DOMAIN_COLUMNS)}, got '{domain}'")
    paths = manifest.shard_paths(domain)
    if not paths:
        raise FileNotFoundError(f"the manifest at '{manifest.root}' lists no {domain} shard")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} {domain} shards listed in '{manifest.root}' are missing, e.g. '{missing[0]}'")
    size = int(manifest.settings["image_size"])
    dataset = ray.data.read_parquet(paths, shuffle="files" if shuffle_files else None)
    dataset = dataset.select_columns(list(columns or DOMAIN_COLUMNS[domain]))  # pushed down into the Parquet read
    return dataset.map_batches(
        decode_batch, batch_format="pyarrow", batch_size=None, zero_copy_batch=True, fn_kwargs={"shape": (size, size)}
    )


def decode_batch(batch: pa.Table, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Arrow block -> numpy columns: tensor columns as ``(B, H, W)`` arrays, the others as 1-D arrays."""
    return {
        name: decode_tensors(batch.column(name), name, shape) if name in TENSOR_DTYPES else batch.column(name).to_numpy()
        for name in batch.column_names
    }


def to_model_inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``{"image": (B, H, W) f16, "label": (B, H, W) u8}`` -> ``(B, 1, H, W)`` float32 and ``(B, H, W)`` int64 (or None)."""
    image = batch["image"].to(torch.float32).unsqueeze(1)
    label = batch.get("label")
    return image, None if label is None else label.to(torch.int64)
