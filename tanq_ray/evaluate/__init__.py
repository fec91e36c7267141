"""Evaluation of segmentations: Dice and ASSD per class, summaries, paired t-tests, tables (paper §4).

See ``docs/evaluation.md`` for definitions, empty-mask behaviour and file formats.
"""

from tanq_ray.evaluate.metrics import (
    CONVENTIONS,
    CROSSMODA,
    CROSSMODA_EMPTY_PREDICTION_ASSD_MM,
    POOLED,
    ScoringConvention,
    assd,
    dice,
    scoring_convention,
    surface,
)
from tanq_ray.evaluate.scoring import (
    CLASSES,
    METRICS,
    Evaluation,
    EvaluationError,
    evaluate_folder,
    load_per_case,
    metric_value,
    score_case,
    summarize,
)
from tanq_ray.evaluate.statistics import PairedTest, comparison_table, gap_closed, paired_ttest, readable_view

__all__ = [
    "CLASSES",
    "CONVENTIONS",
    "CROSSMODA",
    "CROSSMODA_EMPTY_PREDICTION_ASSD_MM",
    "METRICS",
    "POOLED",
    "Evaluation",
    "EvaluationError",
    "PairedTest",
    "ScoringConvention",
    "assd",
    "comparison_table",
    "dice",
    "evaluate_folder",
    "gap_closed",
    "load_per_case",
    "metric_value",
    "paired_ttest",
    "readable_view",
    "score_case",
    "scoring_convention",
    "summarize",
    "surface",
]
