"""Small numpy renderers for PNG figures: grey images, label contours, grids.

Contours take each structure's colour from :mod:`tanq_ray.labels`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tanq_ray.io_utils import atomic_path
from tanq_ray.labels import COLOURS



def to_rgb(image: np.ndarray, window: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(H, W) float image -> (H, W, 3) uint8 grey, intensities clipped to ``window``."""
    low, high = window
    scaled = np.clip((np.asarray(image, dtype=np.float32) - low) / (high - low), 0.0, 1.0)
    grey = (scaled * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def label_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of a boolean (H, W) mask that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    interior = (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )
    return mask & ~interior


def draw_contours(rgb: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Copy of (H, W, 3) ``rgb`` with the outline of each labelled class painted in its colour."""
    out = rgb.copy()
    for value, colour in COLOURS.items():
        out[label_boundary(np.asarray(label) == value)] = colour
    return out


def enlarge(rgb: np.ndarray, min_size: int) -> np.ndarray:
    """Nearest-neighbour upscale of an (H, W, 3) image by the smallest integer factor reaching ``min_size``."""
    factor = max(1, -(-min_size // min(rgb.shape[:2])))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else rgb


def grid(tiles: Sequence[Sequence[np.ndarray]], pad: int = 2, background: int = 0) -> np.ndarray:
    """Rows of equally sized (H, W, 3) uint8 tiles -> one (rows*H, cols*W, 3) image with padding."""
    height, width = tiles[0][0].shape[:2]
    n_rows, n_cols = len(tiles), max(len(row) for row in tiles)
    canvas = np.full(
        (n_rows * (height + pad) + pad, n_cols * (width + pad) + pad, 3), background, dtype=np.uint8
    )
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile.shape[:2] != (height, width):
                raise ValueError(f"tile ({r}, {c}) is {tile.shape[:2]}, expected {(height, width)}")
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            canvas[top : top + height, left : left + width] = tile
    return canvas


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 image as PNG, atomically."""
    from matplotlib.image import imsave  # lazy: matplotlib import costs ~0.3 s

    with atomic_path(path) as tmp:
        imsave(tmp, rgb, format="png")
    return Path(path)


def with_column_titles(rgb: np.ndarray, titles: Sequence[str], min_width: int = 720) -> np.ndarray:
    """(H, W, 3) grid of equal columns, enlarged to at least ``min_width`` pixels, with a title above each column."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = enlarge(rgb, -(-min_width * rgb.shape[0] // rgb.shape[1]))
    height, width = image.shape[:2]
    header = 28
    figure = Figure(figsize=(width / 100, (height + header) / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, height / (height + header)))
    axes.imshow(image, interpolation="nearest")
    axes.set_axis_off()
    for index, title in enumerate(titles):
        figure.text((index + 0.5) / len(titles), 1 - 0.5 * header / (height + header), title, ha="center", va="center", fontsize=11)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
