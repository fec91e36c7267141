"""Comparing methods: paired t-tests over shared cases and a results table (paper §4, Tables 1-2).

Inputs are per-case rows as produced by :func:`~tanq_ray.evaluate.scoring.score_case`
or read back with :func:`~tanq_ray.evaluate.scoring.load_per_case`: dicts with
``case_id`` and the metric keys. ``dice_mean`` (mean of VS and cochlea Dice)
is accepted wherever a metric name is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from tanq_ray.evaluate.scoring import metric_value, summarize
from tanq_ray.tables import Table

# Table columns in the paper's order (Table 1): Dice per class, their mean, ASSD per class.
TABLE_METRICS: dict[str, str] = {
    "dice_vs": "Dice VS",
    "dice_cochlea": "Dice cochlea",
    "dice_mean": "Dice mean",
    "assd_vs": "ASSD VS",
    "assd_cochlea": "ASSD cochlea",
}


@dataclass(frozen=True)
class PairedTest:
    """Two-sided paired t-test of ``metric`` on ``n`` shared cases; ``mean_difference`` is mean(a - b).

    ``t`` and ``p`` are NaN when fewer than two pairs remain.
    """

    metric: str
    n: int
    mean_difference: float
    t: float
    p: float


def _by_case(rows: Sequence[dict[str, Any]], side: str) -> dict[str, dict[str, Any]]:
    indexed: dict[str, dict[str, Any]] = {}
    for row in rows:
        case = row["case_id"]
        if case in indexed:
            raise ValueError(f"case '{case}' appears twice in the {side} results")
        indexed[case] = row
    return indexed


def paired_ttest(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], metric: str) -> PairedTest:
    """Paired t-test (``scipy.stats.ttest_rel``) of ``metric`` between two result sets, matched by ``case_id``.

    Cases present in only one set are ignored; a pair where either value is
    NaN (undefined ASSD) is dropped. Raises ``ValueError`` when the sets share
    no case.
    """
    first, second = _by_case(a, "first"), _by_case(b, "second")
    shared = sorted(set(first) & set(second))
    if not shared:
        raise ValueError(f"the two result sets share no case_id (first has {len(first)}, second {len(second)} cases)")
    pairs = np.array([(metric_value(first[case], metric), metric_value(second[case], metric)) for case in shared])
    pairs = pairs[~np.isnan(pairs).any(axis=1)]
    n = len(pairs)
    mean_difference = float((pairs[:, 0] - pairs[:, 1]).mean()) if n else math.nan
    if n < 2:
        return PairedTest(metric=metric, n=n, mean_difference=mean_difference, t=math.nan, p=math.nan)
    result = stats.ttest_rel(pairs[:, 0], pairs[:, 1])
    return PairedTest(metric=metric, n=n, mean_difference=mean_difference, t=float(result.statistic), p=float(result.pvalue))


def _mean_std(mean: float, std: float) -> str | None:
    return None if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


GAP_CLOSED = "gap closed"


def gap_closed(value: float, lower: float, upper: float) -> float:
    """Share of the domain gap a method closes: ``(value - lower) / (upper - lower)`` (NaN when the bounds meet).

    ``lower`` is the source-only row, ``upper`` the target-supervised row
    (both on mean Dice): 0 = no better than no adaptation, 1 = as good as
    training on labelled target images.
    """
    return (value - lower) / (upper - lower) if upper != lower else math.nan


def comparison_table(
    runs: Mapping[str, Sequence[dict[str, Any]]], reference: str | None = None, bounds: tuple[str, str] | None = None
) -> Table:
    """One row per run: "mean ± std" text columns (4 decimals), the same numbers as numeric columns, ``n_cases``.

    With ``reference`` (a key of ``runs``), a column ``p (Dice mean vs <reference>)``
    holds the paired t-test p-value of per-case mean Dice against that run
    (empty for the reference itself). With ``bounds`` = (lower run, upper
    run), a column :data:`GAP_CLOSED` holds :func:`gap_closed` of each run's mean Dice.
    """
    if not runs:
        raise ValueError("comparison_table needs at least one run")
    for name in (reference, *(bounds or ())):
        if name is not None and name not in runs:
            raise ValueError(f"run '{name}' is not among the runs {sorted(runs)}")
    p_column = f"p (Dice mean vs {reference})"
    columns = ["run", *TABLE_METRICS.values(), *TABLE_METRICS, "n_cases"]
    columns += ([GAP_CLOSED] if bounds is not None else []) + ([p_column] if reference is not None else [])
    dice_means = {name: summarize(per_case)["dice_mean"] if per_case else math.nan for name, per_case in runs.items()}
    rows = []
    for name, per_case in runs.items():
        if not per_case:
            raise ValueError(f"run '{name}' has no per-case results")
        summary = summarize(per_case)
        row: dict[str, Any] = {"run": name}
        for metric, label in TABLE_METRICS.items():
            row[label] = _mean_std(summary[metric], summary[f"{metric}_std"])
            row[metric] = summary[metric]
        row["n_cases"] = summary["n_cases"]
        if bounds is not None:
            row[GAP_CLOSED] = gap_closed(summary["dice_mean"], dice_means[bounds[0]], dice_means[bounds[1]])
        if reference is not None:
            row[p_column] = None if name == reference else paired_ttest(per_case, runs[reference], "dice_mean").p
        rows.append(row)
    return Table(columns, rows)


def readable_view(table: Table) -> Table:
    """The comparison table without its numeric twins of the "mean ± std" columns (for terminals and Markdown)."""
    return Table([c for c in table.columns if c not in TABLE_METRICS], table.rows)
