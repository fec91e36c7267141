"""Ray Data readers of the ingest shards, one dataset per domain.

``read_domain(manifest, "ceT1")`` is a dataset of rows with ``image`` and
``label``; ``read_domain(manifest, "hrT2")`` has ``image`` only. The tensor
columns stay raw fixed-size binary inside Ray Data; :class:`SliceCollate`, the
``collate_fn`` of ``iter_torch_batches``, turns each Arrow batch straight into
model inputs with one vectorised copy per column (no per-row work, no
intermediate tensor-extension blocks)::

    for batch in read_domain(manifest, "ceT1").iter_torch_batches(
        batch_size=4, collate_fn=SliceCollate.for_manifest(manifest)
    ):
        batch["image"]  # (B, 1, H, W) float32 in [-1, 1]
        batch["label"]  # (B, H, W) int64, 0 background / 1 VS / 2 cochlea
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pyarrow as pa
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from tanq_ray.data.layout import Domain
from tanq_ray.data.shards import Manifest, decode_tensors

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
    dataset = ray.data.read_parquet(paths, shuffle="files" if shuffle_files else None)
    return dataset.select_columns(list(columns or DOMAIN_COLUMNS[domain]))  # pushed down into the Parquet read


class SliceCollate(ArrowBatchCollateFn):
    """Arrow batch of shard rows -> ``{"image": (B, 1, H, W) float32, "label": (B, H, W) int64}``.

    ``label`` is present when the batch has that column (ceT1).
    """

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.shape = (image_size, image_size)

    @classmethod
    def for_manifest(cls, manifest: Manifest) -> "SliceCollate":
        return cls(int(manifest.settings["image_size"]))

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        out = {"image": torch.from_numpy(decode_tensors(batch.column("image"), "image", self.shape)).float().unsqueeze(1)}
        if "label" in batch.column_names:
            out["label"] = torch.from_numpy(decode_tensors(batch.column("label"), "label", self.shape)).long()
        return out
