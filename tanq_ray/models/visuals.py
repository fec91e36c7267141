"""Figures of a translator: ceT1 | pseudo-hrT2 | real hrT2 grids, and where PatchNCE patches fall (paper Fig. 5).

Rendering uses :mod:`tanq_ray.visuals` (grey tiles, VS red / cochlea sky-blue contours).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from scipy.ndimage import distance_transform_edt
from torch import Tensor

from tanq_ray.models.generator import ResnetGenerator
from tanq_ray.labels import COCHLEA, VS
from tanq_ray.models.patches import PatchSelection
from tanq_ray.visuals import draw_contours, grid, save_png, to_rgb

PATCH_COLOUR = (60, 220, 60)
TARGETS = {"vs": VS, "cochlea": COCHLEA}


def _numpy(images: Tensor | np.ndarray) -> np.ndarray:
    """``(B, 1, H, W)`` / ``(B, H, W)`` tensor or array -> ``(B, H, W)`` array."""
    array = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    return array[:, 0] if array.ndim == 4 else array


def translation_grid(
    source: Tensor,
    translated: Tensor,
    target: Tensor,
    source_label: Tensor,
    target_label: Tensor | None = None,
    max_rows: int = 8,
    path: str | Path | None = None,
) -> np.ndarray:
    """One row per sample: ceT1 | pseudo-hrT2 | real hrT2, as an ``(H', W', 3)`` uint8 image.

    ``source``, ``translated``: ``(B, 1, H, W)`` in [-1, 1]; ``target``:
    ``(B', 1, H, W)`` real hrT2 (unpaired; row ``i`` shows ``target[i % B']``);
    ``source_label``: ``(B, H, W)``, outlined on ceT1 and on its translation;
    ``target_label``: outlined on real hrT2 when known (e.g. phantoms).
    Written as PNG when ``path`` is given.
    """
    src, fake, tgt, lab = _numpy(source), _numpy(translated), _numpy(target), _numpy(source_label)
    tgt_lab = None if target_label is None else _numpy(target_label)
    rows = []
    for i in range(min(len(src), max_rows)):
        j = i % len(tgt)
        real = to_rgb(tgt[j]) if tgt_lab is None else draw_contours(to_rgb(tgt[j]), tgt_lab[j])
        rows.append([draw_contours(to_rgb(src[i]), lab[i]), draw_contours(to_rgb(fake[i]), lab[i]), real])
    canvas = grid(rows)
    if path is not None:
        save_png(canvas, path)
    return canvas


def patch_centres(selection: PatchSelection, sample: int, image_size: tuple[int, int], padding: int = 0) -> np.ndarray:
    """``(N, 2)`` (row, col) image-pixel coordinates of the centres of one sample's selected patches.

    A feature cell of an ``(h, w)`` grid covers ``H / (h - 2 * padding)`` image
    pixels (``padding``: reflection padding of the feature map, 3 for CUT's
    layer 0); centres are clipped to the image.
    """
    h, w = selection.grid
    index = selection.indices[sample].detach().cpu().numpy()
    cells = np.stack([index // w, index % w], axis=1).astype(np.float64)
    size = np.asarray(image_size, dtype=np.float64)
    scale = size / (np.asarray([h, w], dtype=np.float64) - 2 * padding)
    return np.clip((cells - padding + 0.5) * scale - 0.5, 0.0, size - 1)


def selection_fractions(centres: np.ndarray, label: np.ndarray, near_px: float = 4.0) -> dict[str, float]:
    """Share of patch centres within ``near_px`` pixels of the VS and of the cochlea (inside counts).

    Returns ``{"vs", "cochlea"}`` (fractions of the selected patches) and
    ``{"vs_area", "cochlea_area"}`` (fraction of the image within the same
    distance: the expected share under uniform random selection).
    """
    rows, cols = np.rint(centres).astype(int).T
    out: dict[str, float] = {}
    for name, value in TARGETS.items():
        mask = np.asarray(label) == value
        near = distance_transform_edt(~mask) <= near_px if mask.any() else np.zeros_like(mask)
        out[name] = float(near[rows, cols].mean()) if len(rows) else 0.0
        out[f"{name}_area"] = float(near.mean())
    return out


def _mark(rgb: np.ndarray, centres: np.ndarray, zoom: int) -> np.ndarray:
    out = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    radius = max(1, zoom // 2)
    for r, c in np.rint((centres + 0.5) * zoom - 0.5).astype(int):
        out[max(r - radius, 0) : r + radius + 1, max(c - radius, 0) : c + radius + 1] = PATCH_COLOUR
    return out


def patch_selection_figure(
    image: Tensor,
    label: Tensor,
    selections: Mapping[int, PatchSelection],
    sample: int = 0,
    near_px: float = 4.0,
    zoom: int = 2,
    path: str | Path | None = None,
) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
    """Paper Fig. 5: the selected patches of each NCE layer (green) over the ceT1 slice with its contours.

    ``image``: ``(B, 1, H, W)`` ceT1 batch the selection was computed on (e.g.
    ``batch["source"]`` with ``TanqModel.last_selection``); ``label``:
    ``(B, H, W)``; ``selections``: NCE layer -> selection. One tile per layer,
    enlarged ``zoom`` times. Returns the image and, per layer, the
    :func:`selection_fractions`; written as PNG when ``path`` is given.
    """
    img, lab = _numpy(image)[sample], _numpy(label)[sample]
    base = draw_contours(to_rgb(img), lab)
    tiles, fractions = [], {}
    for layer, selection in selections.items():
        centres = patch_centres(selection, sample, img.shape, ResnetGenerator.layer_padding(layer))
        fractions[layer] = selection_fractions(centres, lab, near_px)
        tiles.append(_mark(base, centres, zoom))
    canvas = grid([tiles])
    if path is not None:
        save_png(canvas, path)
    return canvas, fractions
