"""The paper's claims from its ablation (PAPER.md §4, Table 2), tested on a study's per-case scores.

Each claim is one or more comparisons "row A beats row B on a metric", each a
two-sided paired t-test over the (case, seed) pairs both rows scored
(:func:`~tanq_ray.evaluate.statistics.paired_ttest`). A comparison is

- *reproduced* when A's mean is higher and p < :data:`ALPHA`,
- *contradicted* when A's mean is lower and p < :data:`ALPHA`,
- *not decided* otherwise (the scores cannot tell the rows apart).

A claim is reproduced when every one of its comparisons is, contradicted when
any is, and not decided otherwise. Comparisons need both rows in the study
(as Table 2 defines them, without ``study.grid`` overrides); a claim none of
whose comparisons can be made is left out.

Each claim pits rows that differ in the one component it is about: (a) the
target-aware norms, RN alone and RN + RAIN, against the same two views with
instance norm (Multi-view = CycleGAN + QS-Attn; "Ours w/o RAIN" and "Ours" =
CycleGAN + a TANQ variant); (b) two views against each one alone; (c)
entropy-selected against random patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from tanq_ray.evaluate.scoring import summarize
from tanq_ray.evaluate.statistics import TABLE_METRICS, paired_ttest
from tanq_ray.models.ablations import PAPER_NAMES
from tanq_ray.tables import Table

ALPHA = 0.05
REPRODUCED, CONTRADICTED, UNDECIDED = "reproduced", "contradicted", "not decided"


@dataclass(frozen=True)
class Comparison:
    """Table 2 row ``better`` scores higher than row ``worse`` on ``metric`` (a :data:`TABLE_METRICS` Dice key)."""

    better: str
    worse: str
    metric: str

    @property
    def text(self) -> str:
        return f"{PAPER_NAMES[self.better]} > {PAPER_NAMES[self.worse]}"


@dataclass(frozen=True)
class Claim:
    label: str
    statement: str
    comparisons: tuple[Comparison, ...]


PAPER_CLAIMS: tuple[Claim, ...] = (
    Claim(
        "a",
        "target-aware normalisation beats instance norm on cochlea Dice",
        (Comparison("tanq_wo_rain", "multi_view", "dice_cochlea"), Comparison("tanq", "multi_view", "dice_cochlea")),
    ),
    Claim(
        "b",
        "Multi-view beats each of its single views",
        (Comparison("multi_view", "cyclegan", "dice_mean"), Comparison("multi_view", "qs_attn", "dice_mean")),
    ),
    Claim("c", "QS-Attn beats CUT", (Comparison("qs_attn", "cut", "dice_mean"),)),
)

COLUMNS = ["claim", "claim verdict", "comparison", "metric", "better mean", "worse mean", "difference", "pairs", "p", "verdict"]


def comparison_verdict(difference: float, p: float, alpha: float = ALPHA) -> str:
    """:data:`REPRODUCED` / :data:`CONTRADICTED` when the test separates the rows (p < alpha), by the sign of A - B."""
    if not p < alpha:  # also NaN: fewer than two pairs
        return UNDECIDED
    return REPRODUCED if difference > 0 else CONTRADICTED


def claim_verdict(verdicts: Sequence[str]) -> str:
    """Reproduced when every comparison is, contradicted when any is, otherwise not decided."""
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return REPRODUCED if verdicts and all(v == REPRODUCED for v in verdicts) else UNDECIDED


def claims_table(runs: Mapping[str, Sequence[dict[str, Any]]], claims: Sequence[Claim] = PAPER_CLAIMS) -> Table:
    """One row per comparison that ``runs`` (Table 2 row name -> per-case scores, ``case_id`` unique) can make.

    ``case_id`` pairs the two rows' scores; a study names them ``<case> seed <s>``,
    so pairs are (case, seed).
    """
    rows: list[dict[str, Any]] = []
    for claim in claims:
        made = [c for c in claim.comparisons if runs.get(c.better) and runs.get(c.worse)]
        results = []
        for comparison in made:
            test = paired_ttest(runs[comparison.better], runs[comparison.worse], comparison.metric)
            results.append(
                {
                    "comparison": comparison.text,
                    "metric": TABLE_METRICS[comparison.metric],
                    "better mean": summarize(runs[comparison.better])[comparison.metric],
                    "worse mean": summarize(runs[comparison.worse])[comparison.metric],
                    "difference": test.mean_difference,
                    "pairs": test.n,
                    "p": test.p,
                    "verdict": comparison_verdict(test.mean_difference, test.p),
                }
            )
        verdict = claim_verdict([r["verdict"] for r in results])
        rows += [{"claim": f"({claim.label}) {claim.statement}", "claim verdict": verdict, **r} for r in results]
    return Table(COLUMNS, rows)
