"""Translator figures: translation grid and where the PatchNCE patches fall (paper Fig. 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tanq_ray.models.config import TanqConfig
from tanq_ray.models.patches import PatchSelection
from tanq_ray.models.registry import build_model
from tanq_ray.models.synthetic import synthetic_batch
from tanq_ray.models.visuals import (
    PATCH_COLOUR,
    patch_centres,
    patch_selection_figure,
    selection_fractions,
    translation_grid,
)


def test_translation_grid_has_three_columns_per_sample(tmp_path):
    batch = synthetic_batch(3, 32)
    path = tmp_path / "grid.png"
    canvas = translation_grid(batch["source"], batch["source"], batch["target"], batch["source_label"], path=path)
    assert canvas.dtype == np.uint8 and canvas.shape == (3 * 34 + 2, 3 * 34 + 2, 3)
    assert path.stat().st_size > 0
    assert (canvas == (230, 40, 40)).all(axis=-1).any()  # VS contour drawn


def test_patch_centres_map_feature_cells_to_image_pixels():
    quarter = PatchSelection(torch.tensor([[0, 5]]), (4, 4))  # 16 x 16 image -> cells of 4 pixels
    np.testing.assert_allclose(patch_centres(quarter, 0, (16, 16)), [[1.5, 1.5], [5.5, 5.5]])
    padded = PatchSelection(torch.tensor([[3 * 22 + 3, 0]]), (22, 22))  # layer 0: 16 + 2 * 3 padding
    np.testing.assert_allclose(patch_centres(padded, 0, (16, 16), padding=3), [[0, 0], [0, 0]])


def test_selection_fractions_count_patches_near_each_target():
    label = np.zeros((16, 16), dtype=np.int64)
    label[2:4, 2:4] = 1
    label[12, 12] = 2
    centres = np.array([[2.0, 3.0], [5.0, 5.0], [12.0, 13.0], [8.0, 8.0]])
    fractions = selection_fractions(centres, label, near_px=1.5)
    assert fractions["vs"] == 0.25 and fractions["cochlea"] == 0.25
    assert 0 < fractions["cochlea_area"] < fractions["vs_area"] < 1


def test_patch_selection_figure_from_a_training_step(tmp_path):
    config = TanqConfig(ngf=8, ndf=8, n_blocks=2, nce_layers=(0, 4, 8, 12, 13), num_patches=32)
    model = build_model("tanq", config)
    batch = synthetic_batch(2, 32)
    model.step(batch)
    assert set(model.last_selection) == set(config.nce_layers)
    canvas, fractions = patch_selection_figure(
        batch["source"], batch["source_label"], model.last_selection, path=tmp_path / "patches.png"
    )
    assert canvas.shape == (2 * 32 + 2 * 2, 5 * (2 * 32 + 2) + 2, 3)  # one row of 2x-zoomed tiles
    assert (canvas == PATCH_COLOUR).all(axis=-1).any()
    assert set(fractions) == set(config.nce_layers)
    for layer in fractions.values():
        assert all(0.0 <= value <= 1.0 for value in layer.values())
    with pytest.raises(IndexError):
        patch_selection_figure(batch["source"], batch["source_label"], model.last_selection, sample=5)


def test_column_titles_enlarge_a_grid_and_write_above_each_column() -> None:
    from tanq_ray.visuals import with_column_titles

    grid = np.zeros((40, 120, 3), dtype=np.uint8)
    titled = with_column_titles(grid, ["ceT1", "pseudo-hrT2", "real hrT2"], min_width=720)
    assert titled.dtype == np.uint8 and titled.shape[2] == 3 and titled.shape[1] >= 720
    header = titled[: titled.shape[0] - 6 * 40]  # the image is enlarged 6 times; the rest is the title strip
    assert header.shape[0] > 0 and header.mean() > 100  # dark text on a light strip, above a black grid
