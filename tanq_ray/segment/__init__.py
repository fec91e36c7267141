"""nnUNet on Ray: dataset writer, our trainer, folds and prediction as Ray tasks, optional pseudo-label refinement.

Typical use (Ray initialised by the caller)::

    segmenter = train_segmenter(config.segment, work_dir, cases, logging=RunRef(uri, experiment_id, row_run_id))
    labels = predict_volumes(segmenter, [(case_id, hrT2_path), ...], out_dir)

See ``docs/segmentation.md``. Importing this package does not import nnunetv2:
nnUNet only runs inside Ray tasks (:mod:`tanq_ray.segment.folders` says why).
"""

from tanq_ray.segment.dataset import DatasetError, TrainingCase
from tanq_ray.segment.folds import FoldResult
from tanq_ray.segment.predict import predict_volumes, probabilities_path
from tanq_ray.segment.refine import refine_pseudo_labels
from tanq_ray.segment.segmenter import Segmenter, load_segmenter, train_segmenter

__all__ = [
    "DatasetError",
    "FoldResult",
    "Segmenter",
    "TrainingCase",
    "load_segmenter",
    "predict_volumes",
    "probabilities_path",
    "refine_pseudo_labels",
    "train_segmenter",
]
