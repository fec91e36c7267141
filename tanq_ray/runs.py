"""A terminal view of the experiment's recent runs (what the MLflow UI lists)."""

from __future__ import annotations

from datetime import datetime

from tanq_ray.tracking import Tracker


def format_runs(tracker: Tracker, limit: int = 20) -> str:
    """Markdown table of the newest runs: start, stage, name, status, seconds, parent and a few metrics."""
    runs = tracker.client.search_runs([tracker.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"])
    lines = ["| started | stage | run | status | seconds | parent | metrics |", "|---|---|---|---|---:|---|---|"]
    for run in runs:
        info, data = run.info, run.data
        seconds = (info.end_time - info.start_time) / 1000 if info.end_time else float("nan")
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(data.metrics.items())[:6])
        started = datetime.fromtimestamp(info.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S")
        parent = data.tags.get("mlflow.parentRunId", "")[:8]
        lines.append(
            f"| {started} | {data.tags.get('stage', '')} | {info.run_name} ({info.run_id[:8]}) | {info.status} "
            f"| {seconds:.1f} | {parent} | {metrics} |"
        )
    return f"experiment '{tracker.config.tracking.experiment}' at {tracker.uri}\n" + "\n".join(lines)
