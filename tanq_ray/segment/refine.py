"""Pseudo-label refinement before retraining (the paper's stated future work, section 3; off by default).

Two rules, applied to a predicted label volume and its softmax
(:func:`tanq_ray.segment.predict.predict_volumes` with ``save_probabilities``):

1. a foreground voxel whose winning class has probability below
   ``min_confidence`` becomes background (the network was unsure);
2. only the largest 26-connected VS component is kept (one VS per scan).

The cochlea is left with all its components: there are two per head, and a
scan may show both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
from scipy import ndimage

from tanq_ray.io_utils import atomic_path
from tanq_ray.labels import VS
from tanq_ray.segment.predict import probabilities_path

DEFAULT_MIN_CONFIDENCE = 0.5


def refine_label(label: np.ndarray, probabilities: np.ndarray, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> np.ndarray:
    """Refined copy of ``label`` (X, Y, Z; values 0/1/2) given ``probabilities`` (3, X, Y, Z)."""
    if probabilities.shape[1:] != label.shape:
        raise ValueError(f"probabilities of shape {probabilities.shape} do not match a label of shape {label.shape}")
    refined = np.array(label, dtype=np.uint8)
    refined[(refined > 0) & (probabilities.max(axis=0) < min_confidence)] = 0
    components, count = ndimage.label(refined == VS, structure=np.ones((3, 3, 3), dtype=bool))
    if count > 1:
        sizes = np.bincount(components.ravel())[1:]
        refined[(components > 0) & (components != 1 + int(np.argmax(sizes)))] = 0
    return refined


def refine_pseudo_labels(
    labels: Mapping[str, Path], out_dir: str | Path, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> dict[str, Path]:
    """Refine each ``case_id -> predicted label`` into ``out_dir/<case_id>.nii.gz``; return case_id -> refined path.

    Each label needs its softmax beside it (:func:`~tanq_ray.segment.predict.probabilities_path`).
    Existing outputs are kept.
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be within [0, 1], got {min_confidence}")
    out_dir = Path(out_dir)
    refined_paths = {}
    for case_id, label_path in labels.items():
        target = out_dir / f"{case_id}.nii.gz"
        refined_paths[case_id] = target
        if target.is_file():
            continue
        softmax_path = probabilities_path(label_path)
        if not softmax_path.is_file():
            raise FileNotFoundError(
                f"case '{case_id}': '{softmax_path}' does not exist; predict with save_probabilities=True to refine"
            )
        image = nib.load(str(label_path))
        with np.load(softmax_path) as stored:
            probabilities = stored["probabilities"]
        try:
            refined = refine_label(np.asanyarray(image.dataobj), probabilities, min_confidence)
        except ValueError as err:
            raise ValueError(f"case '{case_id}': '{softmax_path}' vs '{label_path}': {err}") from None
        with atomic_path(target) as tmp:
            nib.save(nib.Nifti1Image(refined, image.affine, image.header), str(tmp))
    return refined_paths
