"""A terminal view of the experiment's recent runs (what the MLflow UI lists)."""

from __future__ import annotations

from datetime import datetime

from tanq_ray.tracking import Tracker

HEADLINE_METRICS = (
    "dice_vs", "dice_cochlea", "dice_mean", "assd_vs", "assd_cochlea", "structure_score", "cv_dice",
    "pseudo_dice", "loss_G", "volumes_ceT1", "volumes_hrT2", "volumes", "seconds",
)  # fmt: skip
"""What each kind of run is judged by, first found first shown: Dice for rows, the structure score for
translators, nnUNet's pseudo-Dice for folds, losses and counts for the rest."""
SHOWN_METRICS = 4


def headline(metrics: dict[str, float]) -> str:
    """Up to four of a run's metrics, the headline ones first, then others by name; NaN stays visible as ``nan``."""
    first = [m for m in HEADLINE_METRICS if m in metrics]
    names = first + sorted(set(metrics) - set(first))
    return ", ".join(f"{name}={metrics[name]:.4g}" for name in names[:SHOWN_METRICS])


def format_runs(tracker: Tracker, limit: int = 20) -> str:
    """Markdown table of the newest runs: start, stage, name, status, seconds, parent and headline metrics."""
    runs = tracker.client.search_runs([tracker.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"])
    lines = ["| started | stage | run | status | seconds | parent | metrics |", "|---|---|---|---|---:|---|---|"]
    for run in runs:
        info, data = run.info, run.data
        seconds = (info.end_time - info.start_time) / 1000 if info.end_time else float("nan")
        metrics = headline(data.metrics)
        started = datetime.fromtimestamp(info.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S")
        parent = data.tags.get("mlflow.parentRunId", "")[:8]
        lines.append(
            f"| {started} | {data.tags.get('stage', '')} | {info.run_name} ({info.run_id[:8]}) | {info.status} "
            f"| {seconds:.1f} | {parent} | {metrics} |"
        )
    return f"experiment '{tracker.config.tracking.experiment}' at {tracker.uri}\n" + "\n".join(lines)
