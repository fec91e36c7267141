"""Parquet slice shards and the ingest manifest.

One row per axial slice: ``case_id``, ``site``, ``domain`` (``ceT1``/``hrT2``),
``slice_index``, ``image`` (float16, H x W, in [-1, 1]) and ``label``
(uint8, H x W; null for hrT2). ``H, W`` are in the schema metadata
(``tanq.slice_shape``) and the manifest settings.

Tensors are stored as fixed-size binary values (one raw little-endian C-order
array per row), not as Arrow list tensors: Parquet writes a list with a
repetition level per element (65,536 per 256 x 256 slice) and decoding those
is about 5x slower than copying one binary value per row. A whole column
decodes with one ``np.frombuffer`` (:func:`decode_tensors`), no per-row work.
Images are left uncompressed (float16 noise does not compress); the other
columns, labels included, use zstd.

Each volume's slices go to ``<domain>/<key>-NNN.parquet`` files of at most
``shard_rows`` rows, each written to a hidden temporary file and renamed into
place. A volume counts as done only when its record ``volumes/<key>.json`` is
written, after all its shards; readers take shard paths from the manifest,
never from a directory listing, so they can never see an unfinished volume.

float16 halves the bytes per slice against float32; its 11-bit mantissa keeps
intensities in [-1, 1] to within 5e-4, far below MRI noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tanq_ray.data.geometry import SliceGeometry
from tanq_ray.io_utils import atomic_path, write_text_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2
SHAPE_KEY = b"tanq.slice_shape"
TENSOR_DTYPES: dict[str, np.dtype] = {"image": np.dtype("<f2"), "label": np.dtype("u1")}
COMPRESSION = {"case_id": "zstd", "site": "zstd", "domain": "zstd", "slice_index": "zstd", "image": "none", "label": "zstd"}


@dataclass(frozen=True)
class VolumeRecord:
    """One ingested volume: where its shards are and how to map slices back (paths relative to the ingest dir)."""

    key: str
    case_id: str
    site: str
    domain: str
    image_file: str
    label_file: str | None
    n_slices: int
    shards: tuple[str, ...]
    geometry: SliceGeometry
    fingerprint: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return values | {"shards": list(self.shards), "geometry": self.geometry.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "VolumeRecord":
        return cls(**(values | {"shards": tuple(values["shards"]), "geometry": SliceGeometry.from_dict(values["geometry"])}))


@dataclass(frozen=True)
class SkippedVolume:
    """A volume left out of the shards, with the file and reason."""

    key: str
    file: str
    reason: str


@dataclass
class Manifest:
    """Everything the ingest stage produced: settings, volumes, skipped volumes."""

    root: Path
    settings: dict[str, Any]
    volumes: list[VolumeRecord] = field(default_factory=list)
    skipped: list[SkippedVolume] = field(default_factory=list)

    def shard_paths(self, domain: str) -> list[str]:
        """Absolute paths of every shard of one domain, in case order."""
        return [str(self.root / shard) for v in self.volumes if v.domain == domain for shard in v.shards]

    def shard_rows(self, domain: str) -> list[int]:
        """Rows of each shard in :meth:`shard_paths` order (every shard but a volume's last is full)."""
        per_shard = int(self.settings["shard_rows"])
        return [
            min(per_shard, v.n_slices - k * per_shard) for v in self.volumes if v.domain == domain for k in range(len(v.shards))
        ]

    def counts(self) -> dict[str, int]:
        return {
            "volumes_ceT1": sum(v.domain == "ceT1" for v in self.volumes),
            "volumes_hrT2": sum(v.domain == "hrT2" for v in self.volumes),
            "slices_ceT1": sum(v.n_slices for v in self.volumes if v.domain == "ceT1"),
            "slices_hrT2": sum(v.n_slices for v in self.volumes if v.domain == "hrT2"),
            "volumes_skipped": len(self.skipped),
        }

    def record(self, key: str) -> VolumeRecord:
        for volume in self.volumes:
            if volume.key == key:
                return volume
        raise KeyError(f"volume '{key}' is not in the manifest at {self.root}")

    def write(self) -> Path:
        payload = {
            "version": MANIFEST_VERSION,
            "settings": self.settings,
            "counts": self.counts(),
            "volumes": [v.to_dict() for v in self.volumes],
            "skipped": [vars(s) for s in self.skipped],
        }
        return write_text_atomic(self.root / MANIFEST_NAME, json.dumps(payload, indent=1))

    @classmethod
    def read(cls, root: str | Path) -> "Manifest":
        root = Path(root)
        path = root / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no ingest manifest at '{path}': run `tanq ingest` first")
        payload = json.loads(path.read_text())
        if payload.get("version") != MANIFEST_VERSION:
            raise ValueError(f"'{path}' has manifest version {payload.get('version')}, expected {MANIFEST_VERSION}")
        return cls(
            root=root,
            settings=payload["settings"],
            volumes=[VolumeRecord.from_dict(v) for v in payload["volumes"]],
            skipped=[SkippedVolume(**s) for s in payload["skipped"]],
        )


def encode_tensors(arrays: np.ndarray | None, name: str, n: int, shape: tuple[int, int]) -> pa.FixedSizeBinaryArray:
    """``(N, H, W)`` array -> fixed-size binary column of ``N`` values; ``None`` -> ``n`` nulls."""
    dtype = TENSOR_DTYPES[name]
    value_type = pa.binary(shape[0] * shape[1] * dtype.itemsize)
    if arrays is None:
        return pa.nulls(n, type=value_type)
    data = np.ascontiguousarray(arrays, dtype=dtype)
    return pa.FixedSizeBinaryArray.from_buffers(value_type, len(data), [None, pa.py_buffer(data)])


def decode_tensors(column: pa.Array | pa.ChunkedArray, name: str, shape: tuple[int, int]) -> np.ndarray:
    """Fixed-size binary column -> ``(N, H, W)`` array, one vectorised copy (nulls are not allowed)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise ValueError(f"column '{name}' has {array.null_count} null values (an hrT2 label?)")
    dtype = TENSOR_DTYPES[name]
    per_row = shape[0] * shape[1]
    data = np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array) * per_row, offset=array.offset * per_row * dtype.itemsize)
    return data.reshape(len(array), *shape).copy()


def slice_shape(table: pa.Table) -> tuple[int, int]:
    """``(H, W)`` of a shard's slices, from its schema metadata."""
    height, width = (table.schema.metadata or {})[SHAPE_KEY].decode().split(",")
    return int(height), int(width)


def tensor_column(table: pa.Table, name: str) -> np.ndarray:
    """A tensor column of a shard table as one ``(N, H, W)`` array (``image`` or ``label``)."""
    return decode_tensors(table.column(name), name, slice_shape(table))


def slice_table(
    case_id: str, site: str, domain: str, indices: np.ndarray, images: np.ndarray, labels: np.ndarray | None
) -> pa.Table:
    """Arrow table of ``len(indices)`` slices; ``images``/``labels`` are ``(N, H, W)``."""
    n = len(indices)
    shape = (int(images.shape[1]), int(images.shape[2]))
    table = pa.table(
        {
            "case_id": pa.array([case_id] * n, pa.string()),
            "site": pa.array([site] * n, pa.string()),
            "domain": pa.array([domain] * n, pa.string()),
            "slice_index": pa.array(indices, pa.int32()),
            "image": encode_tensors(images, "image", n, shape),
            "label": encode_tensors(labels, "label", n, shape),
        }
    )
    return table.replace_schema_metadata({SHAPE_KEY: f"{shape[0]},{shape[1]}".encode()})


def write_volume_shards(
    root: Path,
    key: str,
    case_id: str,
    site: str,
    domain: str,
    images: np.ndarray,
    labels: np.ndarray | None,
    shard_rows: int,
) -> list[str]:
    """Write one volume's ``(Z, H, W)`` slices as shards of <= ``shard_rows`` rows; return relative paths."""
    written = []
    for number, start in enumerate(range(0, len(images), shard_rows)):
        stop = min(start + shard_rows, len(images))
        table = slice_table(
            case_id, site, domain, np.arange(start, stop), images[start:stop], None if labels is None else labels[start:stop]
        )
        relative = f"{domain}/{key}-{number:03d}.parquet"
        with atomic_path(root / relative) as tmp:
            pq.write_table(table, tmp, compression=COMPRESSION)
        written.append(relative)
    return written
