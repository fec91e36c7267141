"""Ray Data readers of the ingest shards, one dataset per domain.

``read_domain(manifest, "ceT1")`` is a dataset of rows with ``image`` and
``label``; ``read_domain(manifest, "hrT2")`` has ``image`` only.

The shards are read through :class:`ShardDatasource`, not
``ray.data.read_parquet``: the manifest already lists every file and its row
count, so no directory listing or Parquet footer is read before the data
(``read_parquet`` indexes each file first, about 50 ms per file here, which
for a few hundred per-volume shards costs more than reading them). The tensor
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

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from ray.data.block import BlockMetadata
from ray.data.collate_fn import ArrowBatchCollateFn
from ray.data.datasource import Datasource, ReadTask

from tanq_ray.data.layout import Domain
from tanq_ray.data.shards import TENSOR_DTYPES, Manifest, decode_tensors

if TYPE_CHECKING:
    import ray.data

DOMAIN_COLUMNS: dict[str, list[str]] = {"ceT1": ["image", "label"], "hrT2": ["image"]}
# A shard read is a file read plus one memory copy per column: half a CPU lets a training
# worker and its reads share a core, and a sweep run several trials on a small machine.
READ_TASK_CPUS = 0.5


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
    paths, rows = manifest.shard_paths(domain), manifest.shard_rows(domain)
    if not paths:
        raise FileNotFoundError(f"the manifest at '{manifest.root}' lists no {domain} shard")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} {domain} shards listed in '{manifest.root}' are missing, e.g. '{missing[0]}'")
    if shuffle_files:
        order = np.random.default_rng().permutation(len(paths))
        paths, rows = [paths[i] for i in order], [rows[i] for i in order]
    source = ShardDatasource(paths, rows, list(columns or DOMAIN_COLUMNS[domain]), int(manifest.settings["image_size"]))
    return ray.data.read_datasource(source, num_cpus=READ_TASK_CPUS)


def _read_shards(paths: Sequence[str], columns: Sequence[str]) -> Iterator[pa.Table]:
    for path in paths:
        yield pq.read_table(path, columns=list(columns))


class ShardDatasource(Datasource):
    """Parquet shards whose paths and row counts are known, read with pyarrow in groups of files."""

    def __init__(self, paths: Sequence[str], rows: Sequence[int], columns: Sequence[str], image_size: int) -> None:
        super().__init__()
        self.paths, self.rows, self.columns = list(paths), list(rows), list(columns)
        pixels = image_size * image_size
        self.bytes_per_row = sum(pixels * TENSOR_DTYPES[c].itemsize if c in TENSOR_DTYPES else 16 for c in self.columns)

    def estimate_inmemory_data_size(self) -> int:
        return sum(self.rows) * self.bytes_per_row

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        tasks = []
        for group in np.array_split(np.arange(len(self.paths)), max(1, min(parallelism, len(self.paths)))):
            paths = [self.paths[i] for i in group]
            rows = sum(self.rows[i] for i in group)
            metadata = BlockMetadata(num_rows=rows, size_bytes=rows * self.bytes_per_row, exec_stats=None, input_files=paths)
            tasks.append(ReadTask(partial(_read_shards, paths, self.columns), metadata, per_task_row_limit=per_task_row_limit))
        return tasks


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
