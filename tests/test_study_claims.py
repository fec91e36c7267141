"""The paper's claims tested on per-case scores: verdicts from paired t-tests, comparisons only where both rows exist."""

from __future__ import annotations

import math

import pytest

from tanq_ray.study_claims import (
    CONTRADICTED,
    PAPER_CLAIMS,
    REPRODUCED,
    UNDECIDED,
    claim_verdict,
    claims_table,
    comparison_verdict,
)

CASES = [f"case_{i} seed {s}" for i in range(5) for s in range(2)]
NOISE = [0.01, -0.02, 0.015, 0.0, -0.01, 0.02, -0.015, 0.005, 0.0, -0.005]


def _scores(vs: float, cochlea: float, noise: float = 1.0) -> list[dict]:
    """Per-case rows around (vs, cochlea), the same small case-to-case noise in every row unless scaled."""
    return [
        {"case_id": case, "dice_vs": vs + noise * n, "dice_cochlea": cochlea - 0.5 * noise * n, "assd_vs": 1.0, "assd_cochlea": 1.0}
        for case, n in zip(CASES, NOISE)
    ]


@pytest.mark.parametrize(
    ("difference", "p", "verdict"),
    [(0.1, 0.001, REPRODUCED), (-0.1, 0.001, CONTRADICTED), (0.1, 0.2, UNDECIDED), (-0.1, 0.05, UNDECIDED), (0.1, math.nan, UNDECIDED)],
)
def test_a_comparison_is_decided_only_by_a_significant_difference(difference: float, p: float, verdict: str) -> None:
    assert comparison_verdict(difference, p) == verdict


def test_a_claim_needs_every_comparison_and_falls_with_any() -> None:
    assert claim_verdict([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert claim_verdict([REPRODUCED, UNDECIDED]) == UNDECIDED
    assert claim_verdict([REPRODUCED, CONTRADICTED]) == CONTRADICTED
    assert claim_verdict([]) == UNDECIDED


def test_claims_on_rows_that_separate_clearly() -> None:
    runs = {
        "multi_view": _scores(0.30, 0.05),
        "tanq_wo_rain": _scores(0.30, 0.40, noise=1.5),  # target-aware norms find the cochlea
        "tanq": _scores(0.35, 0.45, noise=2.0),
        "cyclegan": _scores(0.20, 0.05, noise=0.5),
        "qs_attn": _scores(0.50, 0.05, noise=2.5),  # a single view above Multi-view: claim (b) falls
        "cut": _scores(0.40, 0.05, noise=-1.0),  # QS-Attn above CUT: claim (c) holds
    }
    table = claims_table(runs)
    verdicts = {row["comparison"]: row["verdict"] for row in table.rows}
    claims = {row["claim"][:3]: row["claim verdict"] for row in table.rows}
    assert verdicts == {
        "Ours w/o RAIN > Multi-view": REPRODUCED,
        "Ours > Multi-view": REPRODUCED,
        "Multi-view > CycleGAN": REPRODUCED,
        "Multi-view > QS-Attn": CONTRADICTED,
        "QS-Attn > CUT": REPRODUCED,
    }
    assert claims == {"(a)": REPRODUCED, "(b)": CONTRADICTED, "(c)": REPRODUCED}
    first = table.rows[0]
    assert first["pairs"] == len(CASES) and first["difference"] == pytest.approx(0.35)
    assert (first["better mean"], first["worse mean"]) == (pytest.approx(0.40), pytest.approx(0.05))


def test_only_comparisons_whose_rows_were_studied_are_made() -> None:
    runs = {"multi_view": _scores(0.3, 0.05), "tanq": _scores(0.3, 0.45, noise=2.0), "source-only": _scores(0.0, 0.0)}
    table = claims_table(runs)
    assert [row["comparison"] for row in table.rows] == ["Ours > Multi-view"]
    assert table.rows[0]["claim verdict"] == REPRODUCED  # judged on the comparison it could make
    assert claims_table({"tanq": _scores(0.3, 0.4)}).rows == []


def test_every_claim_compares_table_2_rows() -> None:
    from tanq_ray.models.ablations import SEGMENTATION_ROWS

    for claim in PAPER_CLAIMS:
        for comparison in claim.comparisons:
            assert {comparison.better, comparison.worse} <= set(SEGMENTATION_ROWS)
