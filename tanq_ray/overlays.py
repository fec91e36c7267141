"""Pictures of results on the region of interest: predictions against truth, translations beside their source.

Both figures show axial ROI slices (:mod:`tanq_ray.data.roi`) chosen where
they matter: the slice with the most VS and the slice with the most cochlea.

- :func:`prediction_figure`: one evaluation hrT2 case, one row per table row
  (source-only, the rounds, target-supervised); truth contours in green,
  predictions in the class colours (VS red, cochlea blue).
- :func:`translation_figure`: ceT1 | each translator's pseudo-hrT2 | a real
  hrT2 of another subject, with the ceT1 label's contours on the first
  columns and the real scan's own truth (when known) on the last, in the
  class colours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np

from tanq_ray.data.roi import ROI_INTENSITY_RANGE, roi_array_to_slices
from tanq_ray.io_utils import atomic_path
from tanq_ray.labels import COLOURS, DISPLAY_NAMES
from tanq_ray.visuals import label_boundary, to_rgb

TRUTH_COLOUR = (60, 220, 60)
STRUCTURES = {name: value for value, name in DISPLAY_NAMES.items()}
TILE_INCHES = 2.4


def load_slices(path: Path | str, *, is_label: bool = False) -> np.ndarray:
    """An ROI NIfTI volume as ``(Z, S, S)`` display slices (labels uint8, images float32)."""
    array = np.asarray(nib.load(str(path)).dataobj)
    return roi_array_to_slices(array.astype(np.uint8 if is_label else np.float32))


def slice_through(label: np.ndarray, value: int) -> int:
    """Index of the slice of ``(Z, S, S)`` ``label`` with the most voxels of ``value`` (the middle slice if none)."""
    counts = (label == value).reshape(len(label), -1).sum(axis=1)
    return int(counts.argmax()) if counts.max() > 0 else len(label) // 2


def overlay(image: np.ndarray, prediction: np.ndarray | None = None, truth: np.ndarray | None = None) -> np.ndarray:
    """Grey (S, S) ROI slice -> RGB with truth contours (green) and prediction contours (class colours)."""
    rgb = to_rgb(image, _window(image))
    if truth is not None:
        rgb[label_boundary(truth > 0)] = TRUTH_COLOUR
    if prediction is not None:
        for value, colour in COLOURS.items():
            rgb[label_boundary(prediction == value)] = colour
    return rgb


def _window(image: np.ndarray) -> tuple[float, float]:
    """Display window: 1st-99.5th percentile of the slice (ROI intensities span 0-1000)."""
    low, high = np.percentile(image, (1.0, 99.5))
    return (float(low), float(high)) if high > low else ROI_INTENSITY_RANGE


def _save_figure(tiles: list[list[np.ndarray]], row_titles: list[str], column_titles: list[str], title: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rows, columns = len(tiles), len(column_titles)
    size = (TILE_INCHES * columns + 1.2, TILE_INCHES * rows + 0.6)
    figure, axes = pyplot.subplots(rows, columns, figsize=size, squeeze=False, layout="constrained")  # makes room for the title
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            axis = axes[r][c]
            axis.imshow(tile, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(column_titles[c], fontsize=9)
            if c == 0:
                axis.set_ylabel(row_titles[r], fontsize=9)
    figure.suptitle(title, fontsize=10)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    pyplot.close(figure)
    return Path(out)


def prediction_figure(image: Path, truth: Path, predictions: Mapping[str, Path], case_id: str, out: Path) -> Path:
    """One evaluation case: a row per table row, columns = the slice through the VS and through a cochlea.

    ``image``/``truth`` are the case's ROI image and ROI truth; ``predictions``
    maps row name -> that row's ROI prediction.
    """
    slices, truth_slices = load_slices(image), load_slices(truth, is_label=True)
    chosen = {name: slice_through(truth_slices, value) for name, value in STRUCTURES.items()}
    tiles = []
    for path in predictions.values():
        predicted = load_slices(path, is_label=True)
        tiles.append([overlay(slices[z], predicted[z], truth_slices[z]) for z in chosen.values()])
    columns = [f"slice {z} through the {name}" for name, z in chosen.items()]
    title = f"{case_id}: truth green, prediction VS red / cochlea blue"
    return _save_figure(tiles, list(predictions), columns, title, out)


def translation_figure(
    source: Path, source_label: Path, translations: Mapping[str, Path], real: Path, real_label: Path | None, case_id: str, out: Path
) -> Path:
    """ceT1 | pseudo-hrT2 per translator | real hrT2, on the ceT1's slices through the VS and through a cochlea.

    All inputs are ROI volumes; the real hrT2 is another subject (the domains
    are unpaired), shown on its own slices through the same structures.
    """
    label = load_slices(source_label, is_label=True)
    columns = {"ceT1": load_slices(source)} | {f"{view} (pseudo-hrT2)": load_slices(path) for view, path in translations.items()}
    real_slices = load_slices(real)
    real_truth = load_slices(real_label, is_label=True) if real_label is not None else None
    tiles, row_titles = [], []
    for name, value in STRUCTURES.items():
        z = slice_through(label, value)
        row = [overlay(volume[z], label[z]) for volume in columns.values()]
        real_z = slice_through(real_truth, value) if real_truth is not None else len(real_slices) // 2
        row.append(overlay(real_slices[real_z], None if real_truth is None else real_truth[real_z]))  # class colours
        tiles.append(row)
        row_titles.append(f"through the {name}")
    title = f"{case_id}: label contours VS red, cochlea blue (last column: that subject's own truth)"
    return _save_figure(tiles, row_titles, [*columns, "real hrT2 (other subject)"], title, out)
