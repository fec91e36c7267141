"""A picture of what ingestion produced: sample slices of each domain with label contours."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tanq_ray.data.shards import Manifest, tensor_column
from tanq_ray.visuals import draw_contours, enlarge, grid, to_rgb

MIN_TILE = 160  # pixels: small slices are enlarged so the contours stay visible


def _most_labelled_slice(paths: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """The slice of one volume with the most VS + cochlea pixels (its middle slice for hrT2)."""
    table = pa.concat_tables(pq.read_table(path, columns=["image", "label"]) for path in paths)
    images = tensor_column(table, "image").astype(np.float32)
    if table.column("label").null_count == len(table):
        return images[len(images) // 2], None
    labels = tensor_column(table, "label")
    best = int((labels > 0).reshape(len(labels), -1).sum(axis=1).argmax())
    return images[best], labels[best]


def sample_grid(manifest: Manifest, per_domain: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 grid: a row of ceT1 slices with contours, a row of hrT2 slices."""
    rows = []
    for domain in ("ceT1", "hrT2"):
        tiles = []
        for record in [v for v in manifest.volumes if v.domain == domain][:per_domain]:
            image, label = _most_labelled_slice([str(manifest.root / shard) for shard in record.shards])
            rgb = to_rgb(image)
            tiles.append(enlarge(rgb if label is None else draw_contours(rgb, label), MIN_TILE))
        if tiles:
            rows.append(tiles)
    if not rows:
        raise ValueError(f"manifest at {manifest.root} lists no volume to preview")
    return grid(rows)
