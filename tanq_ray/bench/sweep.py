"""``tanq bench sweep``: a sweep's wall time against the sum of its trials' times (parallel efficiency).

Four Table 2 rows (CUT, QS-Attn, CycleGAN, TANQ) with the tiny networks
train for 2 epochs each on a phantom ingested at 64 x 64; Tune runs as many
trials at once as the machine holds (:func:`tanq_ray.tune.sweep.concurrent_trials`).
The ideal speed-up is that number of parallel trials.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tanq_ray.bench import local_ray
from tanq_ray.bench.report import Figure
from tanq_ray.config import CONFIG_DIR, load_config
from tanq_ray.data.ingest import run_ingest
from tanq_ray.data.phantom import generate_cohort
from tanq_ray.tune.sweep import run_sweep


def measure(quick: bool = False) -> list[Figure]:
    """Run one sweep; report its wall time, the trials' summed time, speed-up and efficiency."""
    local_ray()
    rows = "[cut,cyclegan]" if quick else "[cut,qs_attn,cyclegan,tanq]"
    epochs = 1 if quick else 2
    with tempfile.TemporaryDirectory(prefix="tanq-bench-sweep-") as folder:
        root = Path(folder)
        config = load_config(
            CONFIG_DIR / "tiny.yaml",
            [
                f"output_dir={root / 'out'}", f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
                f"models.tanq.epochs={epochs}", f"models.cyclegan.epochs={epochs}", "train.cpus_per_worker=0.5",
                "train.visual_every=1000", f"sweep.rows={rows}",
            ],
        )  # fmt: skip
        cohort = generate_cohort(root / "cohort", cases=2 if quick else 4, eval_cases=0, size=64 if quick else 96, seed=0)
        run_ingest(cohort.train_dir, config.stage_dir("ingest"), config.ingest, progress=False)
        result = run_sweep(config)
    speedup = result.trial_seconds / result.wall_seconds
    trials = len(result.table.rows)
    return [
        Figure("sweep wall time", result.wall_seconds, "s", note=f"{trials} trials, {epochs} epochs each, tiny nets, 64 x 64"),
        Figure("sum of the trials' times", result.trial_seconds, "s"),
        Figure("speed-up (sum / wall)", speedup, "x", "ideal = trials at once", float(result.concurrency)),
        Figure("parallel efficiency", 100 * speedup / result.concurrency, "%", note=f"{result.concurrency} trials at once"),
    ]
