"""The contrast of a structure to its surroundings, the cheap score sweeps can rank translators by."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tanq_ray.evaluate.contrast import contrast_gaps, mean_contrasts, structure_contrast


def _volume(brightness: float) -> tuple[np.ndarray, np.ndarray]:
    """A 3-voxel VS cube of ``brightness`` in noisy tissue of 1.0; the label marks the cube."""
    rng = np.random.default_rng(0)
    image = 1.0 + 0.05 * rng.standard_normal((16, 16, 16))
    label = np.zeros((16, 16, 16), dtype=np.uint8)
    label[6:9, 6:9, 6:9] = 1
    image[label == 1] += brightness - 1.0
    return image, label


def test_contrast_is_the_structures_z_score_above_its_ring_whatever_the_scanner_scale() -> None:
    image, label = _volume(3.0)
    z = (image - image.mean()) / image.std()
    ring = np.zeros_like(label, dtype=bool)
    ring[4:11, 4:11, 4:11] = True
    ring &= label == 0  # 2 voxels around the cube (26-connected dilation is not a cube: compare with a tolerance)
    contrast = structure_contrast(image, label, 1)
    assert contrast == pytest.approx(z[label == 1].mean() - z[ring].mean(), rel=0.02)
    assert structure_contrast(7.0 * image + 100.0, label, 1) == pytest.approx(contrast)  # nnUNet z-scores: scale is free
    assert structure_contrast(-image, label, 1) == pytest.approx(-contrast)  # a dark structure has a negative contrast
    assert math.isnan(structure_contrast(image, label, 2))  # no cochlea labelled


def test_gaps_compare_translations_with_real_scans_per_structure() -> None:
    bright, dim = _volume(3.0), _volume(1.5)
    real = mean_contrasts([bright])
    assert math.isnan(real["cochlea"])
    gaps = contrast_gaps(mean_contrasts([dim]), real)
    assert gaps["vs_contrast_gap"] == pytest.approx(real["vs"] - mean_contrasts([dim])["vs"]) and gaps["vs_contrast_gap"] > 1
    assert contrast_gaps(mean_contrasts([bright]), real)["vs_contrast_gap"] == 0.0
    assert math.isnan(gaps["cochlea_contrast_gap"])
