"""Capacity plan: work per stage x time per unit -> GPU-hours and wall time on N GPU workers.

    python deploy/capacity.py [key=value ...] [--config configs/paper.yaml] [--gpus 1 2 5 10] [--out STEM]
                              [--measured]

The work comes from the config (epochs, batch, nnUNet configurations x folds,
self-training rounds) and the cohort: CrossMoDA 2022, 210 labelled ceT1 + 210
hrT2 training volumes and 64 validation hrT2 (PAPER.md, section 5), at about
120 axial slices per volume after resampling to 1.5 mm (docs/design.md).
Each time per unit says where it comes from (:data:`UNIT_TIMES`): measured on
the 2-core development CPU, quoted from the paper (RTX 3090), or derived.
With ``--measured`` the translators' training steps and slices come from
:data:`MEASURED_GPU` instead, measured by ``tanq bench gpu`` on one GPU
(docs/gpu.md); nnUNet stays on the paper's figures.

Wall time assumes one GPU per worker (deploy/kubernetes/ray-cluster.yaml):
TANQ and CycleGAN train side by side when there are GPUs for both, the
translators' slices and the nnUNet predictions spread over all GPU workers,
and the trainings of one round (configurations x folds) run N at a time.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tanq_ray.config import Config, ConfigError, load_config
from tanq_ray.tables import Table

HOUR = 3600.0
DIGITS = 4  # significant digits of the hours in the Markdown table


@dataclass(frozen=True)
class UnitTime:
    """Seconds per unit of work and where the number comes from."""

    seconds: float
    source: str


@dataclass(frozen=True)
class Cohort:
    """How much data one run sees."""

    ceT1_volumes: int = 210
    hrT2_volumes: int = 210
    eval_volumes: int = 64
    slices_per_volume: int = 120

    @property
    def ceT1_slices(self) -> int:
        return self.ceT1_volumes * self.slices_per_volume


PAPER_COHORT = Cohort()
PAPER_EPOCHS = {"tanq": 400, "cyclegan": 200}
PAPER_NNUNET_ITERATIONS = 1000 * 250  # epochs x iterations per epoch, nnUNet defaults (paper)

# Paper: "both TANQ and CycleGAN required a total of 72 GPU hours using a single RTX 3090".
PAPER_TRANSLATOR_GPU_HOURS = 72.0
# `tanq bench step` here (CPU, 128 x 128, batch 1, 2 threads): seconds per training step.
# Used only to split the paper's 72 hours between the two translators.
CPU_STEP_SECONDS = {"tanq": 1.58, "cyclegan": 2.23}

# Per slice per CPU core, per slice, per training, per scan.
UNIT_TIMES = {
    "ingest": UnitTime(1 / 118.0, "measured here: `tanq bench data`, 236 slices/s on 2 cores"),
    "translate_tanq": UnitTime(0.0669, "paper, RTX 3090"),
    "translate_cyclegan": UnitTime(0.0043, "paper, RTX 3090"),
    # Paper: "the Segmentation network required 24 GPU hours using 5 RTX 3090 GPUs";
    # read as 24 hours per (configuration, fold) training, one fold per GPU.
    "nnunet_training": UnitTime(24.0 * HOUR, "paper, RTX 3090 (our reading)"),
    "nnunet_predict": UnitTime(12.1, "paper, RTX 3090"),
}


@dataclass(frozen=True)
class GpuFigures:
    """Translator times measured on one GPU by ``tanq bench gpu`` (bf16 autocast, 256 x 256, batch 4)."""

    card: str
    date: str
    step_seconds: Mapping[str, float] = field(default_factory=dict)
    """Seconds per training iteration (one D + G update), by model."""
    translate_seconds: Mapping[str, float] = field(default_factory=dict)
    """Seconds per translated slice, by model."""

    @property
    def source(self) -> str:
        return f"measured: `tanq bench gpu`, {self.card}, {self.date}"


# `tanq bench gpu` on one NVIDIA H200 (torch 2.11, CUDA 13.0), 2026-11-28: bf16 autocast steps without
# channels_last or torch.compile (what `train.bf16` runs), fp32 translation of batches of 8 slices.
MEASURED_GPU = GpuFigures(
    "NVIDIA H200", "2026-11-28", {"tanq": 0.1023, "cyclegan": 0.06414}, {"tanq": 0.003704, "cyclegan": 0.001434}
)


def translator_seconds_per_iteration(model: str, batch_size: int) -> float:
    """GPU seconds per training iteration of ``model``: the paper's 72 hours, shared out by our CPU step ratio."""
    work = {name: PAPER_EPOCHS[name] * CPU_STEP_SECONDS[name] for name in PAPER_EPOCHS}
    hours = PAPER_TRANSLATOR_GPU_HOURS * work[model] / sum(work.values())
    paper_iterations = PAPER_EPOCHS[model] * math.ceil(PAPER_COHORT.ceT1_slices / batch_size)
    return hours * HOUR / paper_iterations


WallHours = Callable[[int], "float | None"]


def spread(hours: float) -> WallHours:
    """Many small independent units (slices, scans) shared by all N GPU workers."""
    return lambda gpus: hours / gpus


def on_worker_cpus(core_hours: float, cores_per_gpu_worker: int) -> WallHours:
    """CPU work on the CPU cores that come with N GPU workers."""
    return lambda gpus: core_hours / (gpus * cores_per_gpu_worker)


def in_lanes(job_hours: Sequence[float], gpus_per_job: int) -> WallHours:
    """Independent jobs of ``gpus_per_job`` GPUs, longest first onto the least-loaded of N // gpus_per_job lanes.

    None when a single job needs more GPUs than there are.
    """

    def wall(gpus: int) -> float | None:
        lanes = gpus // gpus_per_job
        if lanes == 0:
            return None
        load = [0.0] * min(lanes, len(job_hours))
        for hours in sorted(job_hours, reverse=True):
            load[load.index(min(load))] += hours
        return max(load)

    return wall


@dataclass(frozen=True)
class Stage:
    """One row of the plan."""

    name: str
    work: str
    unit_time: str
    source: str
    gpu_hours: float
    wall_hours: WallHours


def plan(
    config: Config, cohort: Cohort = PAPER_COHORT, cores_per_gpu_worker: int = 8, gpu: GpuFigures | None = None
) -> list[Stage]:
    """The stages of one pipeline run under ``config`` on ``cohort``, in order.

    ``gpu``: take the translators' step and slice times from these measured
    figures instead of the paper's (derived) ones.
    """
    train, segment = config.train, config.segment
    ingest, predict, nnunet = UNIT_TIMES["ingest"], UNIT_TIMES["nnunet_predict"], UNIT_TIMES["nnunet_training"]

    ingest_slices = (cohort.ceT1_volumes + cohort.hrT2_volumes) * cohort.slices_per_volume
    ingest_core_hours = ingest_slices * ingest.seconds / HOUR
    stages = [
        Stage(
            "ingest (CPU)", f"{ingest_slices:,} slices", f"{ingest.seconds:.4f} s / slice / core", ingest.source,
            gpu_hours=0.0, wall_hours=on_worker_cpus(ingest_core_hours, cores_per_gpu_worker),
        ),
    ]  # fmt: skip

    iterations_per_epoch = math.ceil(cohort.ceT1_slices / (train.batch_size * train.num_workers))
    epochs = {model: getattr(config.models, model).epochs for model in PAPER_EPOCHS}
    if gpu is None:
        per_iteration = {model: translator_seconds_per_iteration(model, train.batch_size) for model in PAPER_EPOCHS}
        train_source = "derived: paper's 72 GPU-h split by our CPU step times"
    else:
        per_iteration, train_source = dict(gpu.step_seconds), gpu.source
    hours = {model: epochs[model] * iterations_per_epoch * per_iteration[model] / HOUR for model in PAPER_EPOCHS}
    stages.append(
        Stage(
            "train TANQ + CycleGAN",
            f"{epochs['tanq']} + {epochs['cyclegan']} epochs x {iterations_per_epoch:,} iterations "
            f"(batch {train.batch_size} x {train.num_workers} GPU)",
            f"{per_iteration['tanq']:.3f} / {per_iteration['cyclegan']:.3f} s / iteration",
            train_source,
            gpu_hours=sum(hours.values()) * train.num_workers,
            wall_hours=in_lanes(list(hours.values()), train.num_workers),
        )
    )

    if gpu is None:
        per_slice = {model: UNIT_TIMES[f"translate_{model}"].seconds for model in PAPER_EPOCHS}
        translate_source = UNIT_TIMES["translate_tanq"].source
    else:
        per_slice, translate_source = dict(gpu.translate_seconds), gpu.source
    translate_hours = cohort.ceT1_slices * sum(per_slice.values()) / HOUR
    stages.append(
        Stage(
            "translate", f"2 x {cohort.ceT1_slices:,} slices",
            f"{per_slice['tanq']:.4g} / {per_slice['cyclegan']:.4g} s / slice",
            translate_source, gpu_hours=translate_hours, wall_hours=spread(translate_hours),
        )
    )  # fmt: skip

    trainings = len(segment.configurations) * len(segment.fold_ids)
    training_hours = nnunet.seconds / HOUR * segment.epochs * segment.iterations_per_epoch / PAPER_NNUNET_ITERATIONS
    per_training = f"{training_hours:.3g} h / training"
    round_work = f"{trainings} trainings x {segment.epochs} epochs x {segment.iterations_per_epoch} iterations"
    round_wall = in_lanes([training_hours] * trainings, 1)
    stages.append(
        Stage("nnUNet, round 0", round_work, per_training, nnunet.source, trainings * training_hours, round_wall)
    )

    rounds = segment.self_training_rounds
    label_hours = rounds * cohort.hrT2_volumes * predict.seconds / HOUR
    stages += [
        Stage(
            f"self-training: pseudo-labels x {rounds}", f"{rounds} x {cohort.hrT2_volumes} hrT2 scans",
            f"{predict.seconds} s / scan", predict.source, gpu_hours=label_hours, wall_hours=spread(label_hours),
        ),
        Stage(
            f"self-training: retrain x {rounds}", f"{rounds} x {round_work}", per_training, nnunet.source,
            gpu_hours=rounds * trainings * training_hours, wall_hours=lambda gpus: rounds * round_wall(gpus),
        ),
    ]  # fmt: skip

    eval_hours = cohort.eval_volumes * predict.seconds / HOUR
    stages.append(
        Stage(
            "evaluate: predict", f"{cohort.eval_volumes} hrT2 scans", f"{predict.seconds} s / scan", predict.source,
            gpu_hours=eval_hours, wall_hours=spread(eval_hours),
        )
    )  # fmt: skip
    return stages


def capacity_table(stages: Sequence[Stage], gpus: Sequence[int]) -> Table:
    """One row per stage and a total: GPU-hours and wall hours on each number of GPU workers."""
    wall_columns = [f"wall h, {n} GPU" for n in gpus]
    rows = []
    for stage in stages:
        row = {"stage": stage.name, "work": stage.work, "time per unit": stage.unit_time, "source": stage.source}
        row |= {"GPU-h": stage.gpu_hours} | {column: stage.wall_hours(n) for column, n in zip(wall_columns, gpus)}
        rows.append(row)
    total = {"stage": "total", "work": "", "time per unit": "", "source": "", "GPU-h": sum(s.gpu_hours for s in stages)}
    for column, n in zip(wall_columns, gpus):
        walls = [stage.wall_hours(n) for stage in stages]
        total[column] = None if any(w is None for w in walls) else sum(walls)
    rows.append(total)
    return Table(["stage", "work", "time per unit", "source", "GPU-h", *wall_columns], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/paper.yaml", help="config file (default: %(default)s)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 5, 10], help="numbers of GPU workers to plan for")
    parser.add_argument("--out", type=Path, help="also write <OUT>.md and <OUT>.csv")
    parser.add_argument(
        "--measured", action="store_true", help="translator times measured on a GPU (MEASURED_GPU), not the paper's"
    )
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.gpus):
        parser.error(f"--gpus: every number of GPU workers must be at least 1, got {args.gpus}")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    table = capacity_table(plan(config, gpu=MEASURED_GPU if args.measured else None), args.gpus)
    print(table.markdown(DIGITS), end="")
    if args.out is not None:
        for path in table.write(args.out):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
