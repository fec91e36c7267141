"""Pseudo-label refinement before retraining (the paper's stated future work, section 3; off by default).

Rules applied to a predicted label volume and its softmax
(:func:`tanq_ray.segment.predict.predict_volumes` with ``save_probabilities``):

1. a foreground voxel whose winning class has probability below
   ``min_confidence`` becomes background (the network was unsure);
2. with ``vs_max_fluid_share``, a VS voxel at least that share of the scan's
   fluid level (:func:`fluid_level`) becomes background (on hrT2 the VS is
   darker than CSF);
3. only the largest 26-connected VS component is kept (one VS per scan).
   With a :class:`VsLocationPrior`, only components that lie where the
   labelled source scans have a VS compete; a scan with no such component
   keeps no VS;
4. with a :class:`CochleaPosition`, each side of the head keeps only the
   cochlea component nearest the place where the source scans have theirs
   (one cochlea per side). Without it every cochlea component is kept.

Why the location rule: a model trained on pseudo-hrT2 marks, with softmax
above 0.9, several grey regions of a real hrT2 scan as VS (temporal lobes,
midline structures above the internal auditory canals), and the largest of
them is often not the VS. Every volume here is an ROI volume, the same box
in millimetres around the same anatomy in both modalities
(:mod:`tanq_ray.data.roi`), so the source labels say where a VS can be. The
VS grows on either side, so their positions count mirrored left-right too.

Why the cochlea rule: the same models mark small bright spots of real hrT2
as cochlea all over the box (in the demo, three predicted cochlea voxels
for every true one, most in components that do not touch a cochlea), and
self-training learns them back from its own pseudo-labels. Each side has
one cochlea, and a component's distance from the source scans' mean cochlea
position picks the true one far more often than its size does
(docs/learning-on-a-cpu.md section 16).

Why the fluid rule: on hrT2 (CISS, FIESTA) the VS is hypointense to CSF, at
about half its signal, while a model trained on translations may mark the
brightest fluid of the scan (cisterns, the healthy internal auditory canal)
as VS: ceT1's VS is bright, and a translator on a short schedule keeps that
(docs/learning-on-a-cpu.md sections 7 and 20). Judged voxel by voxel, so a
drawn VS that runs into the cistern beside it keeps its tumour part. A
cystic VS, as bright as CSF in places, loses those places.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from tanq_ray.io_utils import atomic_path
from tanq_ray.labels import COCHLEA, VS
from tanq_ray.segment.predict import probabilities_path

DEFAULT_MIN_CONFIDENCE = 0.5
PLAUSIBLE_SHARE = 0.5
"""A VS component is plausible when at least this share of its voxels lies near a source VS."""
FLUID_PERCENTILE = 99.0
"""The intensity percentile of an hrT2 ROI volume taken as its fluid (CSF) level: the box around both inner ears
holds the cerebellopontine cisterns, the canals, the labyrinths and the fourth ventricle, well over 1 % of it."""


def fluid_level(image: np.ndarray) -> float:
    """The fluid (CSF) signal of an hrT2 ROI volume ``image`` (X, Y, Z): its :data:`FLUID_PERCENTILE` intensity."""
    return float(np.percentile(image, FLUID_PERCENTILE))


def index_offsets_mm(indices: np.ndarray, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """``(M, 3)``: the offsets in mm of ``(M, 3)`` voxel indices from the centre of an ROI volume of ``shape``.

    Axis 0 runs left-right (canonical RAS).
    """
    centre = (np.asarray(shape) - 1) / 2.0
    return (np.asarray(indices, dtype=float) - centre) * np.asarray(spacing, dtype=float)


def offsets_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``(M, 3)``: the offsets of ``mask``'s voxels from the centre of its ROI volume, in mm."""
    return index_offsets_mm(np.argwhere(mask), mask.shape, spacing)


@dataclass(frozen=True)
class VsLocationPrior:
    """Where the labelled source scans have VS voxels, in mm from their ROI centre, on both sides of the head."""

    source_vs_mm: cKDTree
    """The source VS voxel offsets and their left-right mirror images, in mm."""
    margin_mm: float

    @classmethod
    def from_labels(cls, label_paths: Iterable[Path], margin_mm: float) -> "VsLocationPrior":
        """The prior of ROI label volumes (canonical RAS, as :mod:`tanq_ray.data.roi` writes them)."""
        if margin_mm < 0:
            raise ValueError(f"the VS location margin must be >= 0 mm, got {margin_mm}")
        found = []
        for path in label_paths:
            image = nib.load(str(path))
            offsets = offsets_mm(np.asarray(image.dataobj) == VS, image.header.get_zooms()[:3])
            found += [offsets, offsets * np.array([-1.0, 1.0, 1.0])]
        points = np.concatenate(found) if found else np.zeros((0, 3))
        if not len(points):
            raise ValueError("no labelled source scan has a VS voxel: the VS location rule has nothing to go by")
        return cls(cKDTree(points), float(margin_mm))

    def near(self, offsets: np.ndarray) -> np.ndarray:
        """``(M,)`` bool: which of the ``(M, 3)`` mm offsets lie within ``margin_mm`` of a source VS voxel."""
        distances, _ = self.source_vs_mm.query(offsets, distance_upper_bound=self.margin_mm + 1e-6)
        return np.isfinite(distances)


@dataclass(frozen=True)
class CochleaPosition:
    """Where the labelled source scans have a cochlea, in mm from their ROI centre, folded onto one side of the head."""

    folded_mm: np.ndarray
    """``(3,)``: the mean of each source scan's per-side cochlea centroids, left-right offsets made positive."""

    @classmethod
    def from_labels(cls, label_paths: Iterable[Path]) -> "CochleaPosition":
        """The position of ROI label volumes (canonical RAS, as :mod:`tanq_ray.data.roi` writes them)."""
        centroids = []
        for path in label_paths:
            image = nib.load(str(path))
            offsets = offsets_mm(np.asarray(image.dataobj) == COCHLEA, image.header.get_zooms()[:3])
            for side, on_side in ((-1.0, offsets[:, 0] < 0), (1.0, offsets[:, 0] >= 0)):
                if on_side.any():
                    centroids.append(offsets[on_side].mean(axis=0) * [side, 1.0, 1.0])
        if not centroids:
            raise ValueError("no labelled source scan has a cochlea voxel: the cochlea rule has nothing to go by")
        return cls(np.mean(centroids, axis=0))

    def one_per_side(self, cochlea: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """``cochlea`` (X, Y, Z bool) keeping on each side the 26-connected component whose centroid is nearest the position."""
        components, count = ndimage.label(cochlea, structure=np.ones((3, 3, 3), dtype=bool))
        if not count:
            return np.zeros_like(cochlea, dtype=bool)
        voxel_centroids = ndimage.center_of_mass(cochlea, components, range(1, count + 1))
        centroids = index_offsets_mm(voxel_centroids, cochlea.shape, spacing)
        keep = []
        for side, on_side in ((-1.0, centroids[:, 0] < 0), (1.0, centroids[:, 0] >= 0)):
            if on_side.any():
                distances = np.linalg.norm(centroids - self.folded_mm * [side, 1.0, 1.0], axis=1)
                keep.append(1 + int(np.argmin(np.where(on_side, distances, np.inf))))
        return np.isin(components, keep)


def refine_label(
    label: np.ndarray,
    probabilities: np.ndarray,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    spacing: Sequence[float] | None = None,
    vs_prior: VsLocationPrior | None = None,
    cochlea_position: CochleaPosition | None = None,
    image: np.ndarray | None = None,
    vs_max_fluid_share: float | None = None,
) -> np.ndarray:
    """Refined copy of ``label`` (X, Y, Z; values 0/1/2) given ``probabilities`` (3, X, Y, Z).

    ``spacing``: the label's voxel spacing in mm, needed by ``vs_prior`` and
    ``cochlea_position``; without ``vs_prior`` every VS component competes,
    without ``cochlea_position`` every cochlea component is kept.
    ``image`` (X, Y, Z): the hrT2 ROI volume the label was predicted from,
    needed by ``vs_max_fluid_share``; without that rule no VS voxel is judged
    by its brightness.
    """
    if probabilities.shape[1:] != label.shape:
        raise ValueError(f"probabilities of shape {probabilities.shape} do not match a label of shape {label.shape}")
    if spacing is None and (vs_prior is not None or cochlea_position is not None):
        raise ValueError("the location rules need the label's voxel spacing in mm")
    refined = np.array(label, dtype=np.uint8)
    refined[(refined > 0) & (probabilities.max(axis=0) < min_confidence)] = 0
    if vs_max_fluid_share is not None:
        if image is None or image.shape != label.shape:
            got = "no image" if image is None else f"an image of shape {image.shape}"
            raise ValueError(f"the fluid rule needs the hrT2 volume of the label's shape {label.shape}; got {got}")
        refined[(refined == VS) & (image >= vs_max_fluid_share * fluid_level(image))] = 0
    components, count = ndimage.label(refined == VS, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:].astype(float)
    if vs_prior is not None and count:
        inside = components > 0
        near = vs_prior.near(offsets_mm(inside, spacing))  # argwhere and boolean indexing share C order
        near_counts = np.bincount(components[inside], weights=near, minlength=count + 1)[1:]
        sizes[near_counts < PLAUSIBLE_SHARE * sizes] = 0.0  # implausible components compete with size 0
    keep = 1 + int(np.argmax(sizes)) if count and sizes.max() > 0 else 0
    refined[(components > 0) & (components != keep)] = 0
    if cochlea_position is not None:
        cochlea = refined == COCHLEA
        refined[cochlea & ~cochlea_position.one_per_side(cochlea, spacing)] = 0
    return refined


def refine_pseudo_labels(
    labels: Mapping[str, Path],
    out_dir: str | Path,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    vs_prior: VsLocationPrior | None = None,
    cochlea_position: CochleaPosition | None = None,
    images: Mapping[str, Path] | None = None,
    vs_max_fluid_share: float | None = None,
) -> dict[str, Path]:
    """Refine each ``case_id -> predicted label`` into ``out_dir/<case_id>.nii.gz``; return case_id -> refined path.

    Each label needs its softmax beside it (:func:`~tanq_ray.segment.predict.probabilities_path`).
    With ``vs_prior`` or ``cochlea_position``, the labels must be ROI volumes. With
    ``vs_max_fluid_share``, ``images`` maps each case to the hrT2 volume its label
    was predicted from. Existing outputs are kept.
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be within [0, 1], got {min_confidence}")
    if vs_max_fluid_share is not None and not 0.0 < vs_max_fluid_share <= 1.0:
        raise ValueError(f"vs_max_fluid_share must be within (0, 1], got {vs_max_fluid_share}")
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
        scan = None if vs_max_fluid_share is None else _hrT2_volume(case_id, images)
        try:
            refined = refine_label(
                np.asanyarray(image.dataobj), probabilities, min_confidence, image.header.get_zooms()[:3], vs_prior,
                cochlea_position, scan, vs_max_fluid_share,
            )
        except ValueError as err:
            raise ValueError(f"case '{case_id}': '{softmax_path}' vs '{label_path}': {err}") from None
        with atomic_path(target) as tmp:
            nib.save(nib.Nifti1Image(refined, image.affine, image.header), str(tmp))
    return refined_paths


def _hrT2_volume(case_id: str, images: Mapping[str, Path] | None) -> np.ndarray:
    """The hrT2 volume ``images[case_id]`` as float32 (X, Y, Z), or a clear error naming what is missing."""
    if images is None or case_id not in images:
        raise ValueError(f"case '{case_id}': the fluid rule needs the hrT2 volume its label was predicted from; none given")
    return np.asarray(nib.load(str(images[case_id])).dataobj, dtype=np.float32)
