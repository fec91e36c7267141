"""Shared fixtures: a Ray instance, small synthetic CrossMoDA folders, a tiny config."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from tanq_ray.config import Config, load_config

# Stored axes (y, x, z) with x flipped: the loader must reorient to RAS+.
PERMUTED_AFFINE = np.array(
    [[0.0, -1.6, 0.0, 70.0], [1.6, 0.0, 0.0, -60.0], [0.0, 0.0, 1.2, -20.0], [0.0, 0.0, 0.0, 1.0]]
)


def synthetic_pair(shape: tuple[int, int, int] = (80, 96, 24), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 'head' with a bright VS ball and a tiny dark cochlea; returns (image, label)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    cx, cy, cz = (s / 2 for s in shape)
    head = ((x - cx) / (0.42 * shape[0])) ** 2 + ((y - cy) / (0.42 * shape[1])) ** 2 < 1
    image = head * (600.0 + 200 * np.sin(x / 7) * np.cos(y / 9)) + rng.normal(0, 10, shape)
    label = np.zeros(shape, np.uint8)
    label[((x - cx - 15) ** 2 + (y - cy) ** 2 + ((z - cz) * 0.8) ** 2) < 30] = 1
    label[((x - cx + 18) ** 2 + (y - cy - 3) ** 2 + (z - cz) ** 2) < 3] = 2
    image = np.where(label == 1, 1100.0, np.where(label == 2, 100.0, image)).astype(np.float32)
    return image, label


def save_nifti(array: np.ndarray, path: Path, affine: np.ndarray = PERMUTED_AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


@pytest.fixture
def make_cohort(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a folder with ``n_labelled`` ceT1+Label and ``n_unlabelled`` hrT2 volumes."""

    def make(n_labelled: int = 2, n_unlabelled: int = 2, shape: tuple[int, int, int] = (80, 96, 24)) -> Path:
        folder = tmp_path / "train"
        folder.mkdir(exist_ok=True)
        for i in range(n_labelled):
            image, label = synthetic_pair(shape, seed=i)
            case = f"crossmoda2022_ldn_{i + 1}"
            save_nifti(image, folder / f"{case}_ceT1.nii.gz")
            save_nifti(label, folder / f"{case}_Label.nii.gz")
        for i in range(n_unlabelled):
            image, _ = synthetic_pair(shape, seed=100 + i)
            save_nifti(image, folder / f"crossmoda2022_etz_{100 + i}_hrT2.nii.gz")
        return folder

    return make


@pytest.fixture
def tiny_config(tmp_path: Path) -> Config:
    """Small slices, an isolated output folder and a private SQLite MLflow store."""
    return load_config(
        None,
        [
            f"output_dir={tmp_path / 'out'}",
            "ingest.image_size=64",
            "ingest.crop_size=256",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.experiment=tests",
        ],
    )


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    import ray.data  # noqa: F401 - its logging set-up on first import closes the handlers of whatever test imports it
    yield ray
    ray.shutdown()


TINY_PHANTOM = ["phantom.cases=2", "phantom.eval_cases=0", "phantom.size=64", "ingest.image_size=32"]
"""The settings of :func:`ingest_tiny_phantom`: a command that needs its shards finished passes them too."""


def ingest_tiny_phantom(out: Path) -> Path:
    """A 2 + 2-volume phantom ingested at 32 x 32 under ``out`` (for module-scoped fixtures)."""
    from tanq_ray.cli import main

    args = ["ingest", f"output_dir={out}", *TINY_PHANTOM, f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}"]
    assert main(args) == 0
    return out
