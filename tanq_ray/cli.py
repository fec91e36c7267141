"""The ``tanq`` command: one subcommand per stage, plus ``bench`` and ``runs``.

Every stage subcommand takes ``--config FILE`` (default: the built-in paper
settings) followed by dotted ``key=value`` overrides, validated before any
work starts.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from tanq_ray.config import Config, ConfigError, PhantomConfig, load_config
from tanq_ray.console import Console
from tanq_ray.output_lock import OutputFolderBusy, output_lock


WRITES_OUTPUT_DIR = frozenset({"ingest", "train", "sweep", "translate", "segment", "pipeline", "study"})
"""Subcommands that write into ``output_dir`` and so hold its lock (:mod:`tanq_ray.output_lock`)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Input problems that deserve a one-line message rather than a traceback."""
    from tanq_ray.data.ingest import IngestError
    from tanq_ray.data.layout import LayoutError
    from tanq_ray.data.phantom import CohortFolderError
    from tanq_ray.train.launcher import TrainingSetupError
    from tanq_ray.evaluate import EvaluationError
    from tanq_ray.segment import DatasetError
    from tanq_ray.translate import TranslateError
    from tanq_ray.tune.sweep import SweepFailedError

    return (
        ConfigError, OutputFolderBusy, FileNotFoundError, LayoutError, IngestError, TrainingSetupError, SweepFailedError,
        TranslateError, DatasetError, EvaluationError, CohortFolderError,
    )  # fmt: skip


def _print_where(config: Config, run_id: str, tracking_hint: str) -> None:
    """The last lines of a command that wrote ``output_dir``: its MLflow run, how to open it, its logs."""
    from tanq_ray.console import log_dir_of

    print(f"MLflow run {run_id} in experiment '{config.tracking.experiment}': {tracking_hint}")
    print(f"logs: {log_dir_of(config.output_dir)}/")


def _add_config_arguments(parser: argparse.ArgumentParser, writes_output: bool = False) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default: built-in paper settings)")
    if writes_output:
        parser.add_argument(
            "-v", "--verbose", action="store_true", help="stream Ray workers' and nnUNet's output here instead of <output_dir>/logs/"
        )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. ingest.shard_rows=512")


def _cmd_phantom(args: argparse.Namespace) -> None:
    from tanq_ray.data.phantom import generate_cohort

    def progress(done: int, total: int, volume: str) -> None:
        print(f"phantom: {done}/{total} {volume}", file=sys.stderr, flush=True)

    cohort = generate_cohort(args.out, cases=args.cases, eval_cases=args.eval_cases, size=args.size, seed=args.seed, progress=progress)
    print(
        f"phantom cohort in {args.out}: {len(cohort.labelled_cases)} labelled ceT1, "
        f"{len(cohort.unlabelled_cases)} unlabelled hrT2 (train/; their truth, for the target-supervised row only, "
        f"in train_hrT2_labels/), {len(cohort.eval_case_ids)} evaluation hrT2 (eval/, labels in eval_labels/)"
    )


def _cmd_ingest(args: argparse.Namespace, config: Config) -> None:
    from tanq_ray.data.shards import Manifest
    from tanq_ray.pipeline import run_stages

    outputs, stage_table, run_id, hint = run_stages(config, "ingest", targets=["ingest"])
    manifest = Manifest.read(config.stage_dir("ingest"))
    counts = manifest.counts()
    stage = stage_table.rows[0]
    took = "finished before with these settings" if stage["state"] == "cached" else f"{stage['seconds']:.1f} s"
    print(
        f"ingest: {counts['volumes_ceT1']} ceT1 + {counts['volumes_hrT2']} hrT2 volumes, "
        f"{counts['slices_ceT1'] + counts['slices_hrT2']} slices in {manifest.root} ({counts['volumes_skipped']} skipped; {took})"
    )
    _print_where(config, run_id, hint)


def _cmd_train(args: argparse.Namespace, config: Config) -> None:
    from tanq_ray.pipeline import run_stages

    model = config.train.model
    outputs, _, run_id, hint = run_stages(config, "train", targets=[f"train-{model}"], adopt_only=["ingest"], tags={"model": model})
    trained = outputs[f"train-{model}"]
    losses = ", ".join(f"{k[5:]}={v:.3f}" for k, v in trained.metrics.items() if k.startswith("loss_"))
    print(f"train {model}: generator at {trained.generator}; last epoch {losses}")
    _print_where(config, run_id, hint)


def _cmd_sweep(args: argparse.Namespace, config: Config) -> None:
    from tanq_ray.tune.sweep import run_sweep

    result = run_sweep(config)
    print(result.table.markdown(), end="")
    print(
        f"sweep '{config.sweep.name}': best trial {result.best_trial}; {result.concurrency} trials at once, "
        f"{result.wall_seconds:.0f} s wall for {result.trial_seconds:.0f} s of trials; table in {result.markdown} and {result.csv}"
    )


def _cmd_translate(args: argparse.Namespace, config: Config) -> None:
    from tanq_ray.pipeline import run_stages
    from tanq_ray.stages.train import TRAIN_STAGES

    adopt_only = ["ingest", *(stage.name for stage in TRAIN_STAGES)]
    outputs, stage_table, run_id, hint = run_stages(config, "translate", targets=["translate"], adopt_only=adopt_only)
    print(f"translate: {len(outputs['translate'].cases)} pseudo-hrT2 volumes in {config.stage_dir('translate')} ({stage_table.rows[-1]['state']})")
    _print_where(config, run_id, hint)


def _run_pipeline(config: Config, from_translate: bool) -> None:
    from tanq_ray.pipeline import run_pipeline

    result = run_pipeline(config, from_translate=from_translate)
    print(result.stages.markdown(), end="")
    print(result.table_markdown or "no evaluation labels (data.eval_labels_dir): nothing scored\n", end="")
    print(f"evaluation in {result.evaluation_dir}")
    _print_where(config, result.run_id, result.tracking_hint)


def _cmd_segment(args: argparse.Namespace, config: Config) -> None:
    _run_pipeline(config, from_translate=True)


def _cmd_pipeline(args: argparse.Namespace, config: Config) -> None:
    _run_pipeline(config, from_translate=False)


def _cmd_study(args: argparse.Namespace, config: Config) -> None:
    from tanq_ray.study import run_study
    from tanq_ray.study_claims import ALPHA

    result = run_study(config)
    print(result.stages.markdown(), end="")
    print(result.table_markdown, end="")
    if result.claims_markdown:
        print(f"the paper's claims (paired t-tests over cases and seeds, p < {ALPHA}):")
        print(result.claims_markdown, end="")
    if result.correlations_markdown:
        print("cheap translation scores against mean Dice (Spearman, over rows and seeds):")
        print(result.correlations_markdown, end="")
    print(f"study in {result.folder}")
    _print_where(config, result.run_id, result.tracking_hint)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from tanq_ray.evaluate import comparison_table, evaluate_folder, load_per_case, readable_view, scoring_convention

    evaluation = evaluate_folder(args.pred, args.gt, args.out, convention=scoring_convention(args.convention))
    runs = {str(args.pred): evaluation.per_case}
    if args.compare is not None:
        runs[str(args.compare)] = load_per_case(args.compare)
    print(readable_view(comparison_table(runs, reference=str(args.compare) if args.compare else None)).markdown(), end="")
    print(f"per case: {evaluation.per_case_path}; summary: {evaluation.summary_path}")


def _cmd_runs(args: argparse.Namespace, config: Config) -> None:
    from tanq_ray.runs import format_runs
    from tanq_ray.tracking import Tracker

    print(format_runs(Tracker(config), limit=args.limit))


def _cmd_bench(args: argparse.Namespace) -> None:
    from tanq_ray.bench import load
    from tanq_ray.bench.report import publish

    title, measure = load(args.what)
    publish(title, measure(quick=args.quick), args.json)


PLAIN = argparse.RawDescriptionHelpFormatter
CONFIG_EPILOG = (
    "Settings come from --config (default: the paper's settings, sized for GPUs; configs/tiny.yaml runs on a laptop)\n"
    "and key=value overrides with dotted keys (model=... is short for train.model=...). A wrong key or value stops\n"
    "before any work and names the key. Details of a run go to <output_dir>/logs/; --verbose streams them here."
)
OVERVIEW = """The TANQ recipe on Ray: translate labelled ceT1 into pseudo-hrT2, train nnUNet on it, self-train on real hrT2.

quick start:
  tanq pipeline --config configs/tiny.yaml       every stage on a built-in phantom cohort (8-30 minutes on 2 CPUs)
  tanq pipeline --config configs/tiny.yaml data.train_dir=/data/train data.eval_dir=/data/eval
  mlflow ui --backend-store-uri sqlite:///mlflow.db

'tanq <command> --help' describes each command with an example."""


def _command(sub: Any, name: str, text: str, example: str, more: str = "") -> argparse.ArgumentParser:
    """A subcommand with its one-line help, a description and its own example, in plain text."""
    epilog = f"example:\n  {example}" + (f"\n\n{more}" if more else "")
    return sub.add_parser(name, help=text, description=f"tanq {name}: {text}.", epilog=epilog, formatter_class=PLAIN)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tanq", description=OVERVIEW, formatter_class=PLAIN)
    sub = parser.add_subparsers(dest="command", required=True)

    defaults = PhantomConfig()
    phantom = _command(
        sub, "phantom", "write a synthetic CrossMoDA-layout cohort (ceT1 + labels, hrT2, evaluation hrT2 with truth)",
        "tanq phantom --out data/phantom --cases 8 --eval-cases 4 --size 96",
    )  # fmt: skip
    phantom.add_argument("--out", type=Path, required=True, help="folder for train/, train_hrT2_labels/, eval/, eval_labels/")
    phantom.add_argument("--cases", type=int, default=defaults.cases, help="labelled ceT1 subjects (and as many hrT2)")
    phantom.add_argument("--eval-cases", type=int, default=defaults.eval_cases, help="evaluation hrT2 subjects")
    phantom.add_argument("--size", type=int, default=defaults.size, help="in-plane matrix of the finest acquisition")
    phantom.add_argument("--seed", type=int, default=defaults.seed)
    phantom.set_defaults(handler=_cmd_phantom)

    stage_commands = [
        ("ingest", "NIfTI folder -> Parquet slice shards (Ray tasks)", "tanq ingest --config configs/tiny.yaml data.train_dir=/data/crossmoda/train", _cmd_ingest),
        ("train", "train one translator with Ray Train: model=tanq or model=cyclegan", "tanq train --config configs/tiny.yaml model=tanq models.tanq.epochs=2", _cmd_train),
        ("sweep", "Ray Tune sweep over translator rows and axes (resumable)", "tanq sweep --config configs/sweeps/normalisation.yaml", _cmd_sweep),
        ("translate", "ceT1 -> pseudo-hrT2 volumes with both trained translators (Ray Data)", "tanq translate --config configs/tiny.yaml", _cmd_translate),
        ("segment", "translate, nnUNet rows (folds as Ray tasks), self-training, evaluate", "tanq segment --config configs/tiny.yaml segment.self_training_rounds=2", _cmd_segment),
        ("pipeline", "every stage; finished ones with unchanged settings are skipped", "tanq pipeline --config configs/tiny.yaml output_dir=runs/mine", _cmd_pipeline),
        ("study", "the ablation study (Table 2): every row once per seed, one table with paired tests (resumable)", "tanq study --config configs/study-cpu.yaml", _cmd_study),
    ]  # fmt: skip
    for name, text, example, handler in stage_commands:
        command = _command(sub, name, text, example, CONFIG_EPILOG)
        _add_config_arguments(command, writes_output=True)
        command.set_defaults(handler=handler, needs_config=True)

    from tanq_ray.evaluate.metrics import CONVENTIONS, CROSSMODA

    evaluate = _command(
        sub, "evaluate", "Dice and ASSD (mm) per case and class of predicted label volumes against the truth",
        "tanq evaluate --pred runs/tiny/segment/round_1/eval_predictions --gt data/eval_labels",
    )  # fmt: skip
    evaluate.add_argument("--pred", type=Path, required=True, help="folder of predicted <case>.nii.gz")
    evaluate.add_argument("--gt", type=Path, required=True, help="folder of true <case>_Label.nii.gz")
    evaluate.add_argument("--out", type=Path, default=None, help="where per_case.csv and summary.json go (default: --pred)")
    evaluate.add_argument("--compare", type=Path, default=None, help="another run's per_case.csv: adds a paired t-test")
    evaluate.add_argument(
        "--convention", choices=sorted(CONVENTIONS), default=CROSSMODA.name,
        help="ASSD as the CrossMoDA challenge scores it (mean of both directions, 350 mm for a missed structure) or "
        "pooled over both surfaces with missed structures left out (this project's scoring before; docs/evaluation.md)",
    )  # fmt: skip
    evaluate.set_defaults(handler=_cmd_evaluate)

    runs = _command(sub, "runs", "list the experiment's recent MLflow runs with their headline metrics", "tanq runs --config configs/tiny.yaml --limit 10")
    _add_config_arguments(runs)
    runs.add_argument("--limit", type=int, default=20)
    runs.set_defaults(handler=_cmd_runs, needs_config=True)

    from tanq_ray.bench import BENCHMARKS

    bench = _command(sub, "bench", "measure one part of the system and print a table of what was measured", "tanq bench step --json step.json")
    bench.add_argument("what", choices=sorted(BENCHMARKS))
    bench.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    bench.add_argument("--quick", action="store_true", help="few repetitions: a smoke test, not a measurement")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def _check_inputs(config: Config) -> None:
    """Stop before the lock, MLflow or Ray when a configured data folder is missing."""
    for key, folder in config.data.model_dump().items():
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(f"data.{key}: folder '{folder}' does not exist")


def _say_which_settings(command: str, config_file: Path | None) -> None:
    """Without --config the paper's settings apply: sized for GPUs, so say so before anything starts."""
    if config_file is None:
        print(
            f"tanq {command}: no --config: using the paper's settings (as configs/paper.yaml: 256 x 256 slices, "
            "TANQ 400 / CycleGAN 200 epochs, nnUNet 2d + 3d_fullres x 5 folds; days on a GPU); "
            "--config configs/tiny.yaml runs on a laptop",
            file=sys.stderr,
        )


def _alias(override: str) -> str:
    """``model=tanq`` is short for ``train.model=tanq``."""
    return "train." + override if override.startswith("model=") else override


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``ray job stop``, a scheduler) as an interrupt, so open MLflow runs end KILLED."""


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated("SIGTERM")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; SIGTERM stops it as Ctrl-C does (a local Ray node, once started, installs its own)."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("numexpr").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    handler: Callable[..., None] = args.handler
    try:
        if getattr(args, "needs_config", False):
            config = load_config(args.config, [_alias(text) for text in args.overrides])
            if args.command in WRITES_OUTPUT_DIR:
                with output_lock(config.output_dir, f"tanq {args.command}"):
                    _check_inputs(config)
                    _say_which_settings(args.command, args.config)
                    with Console(args.command, config.output_dir, args.verbose):
                        handler(args, config)
            else:
                handler(args, config)
        else:
            handler(args)
    except _user_errors() as err:
        print(f"tanq {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"tanq {args.command}: stopped ({stop or 'Ctrl-C'}); run it again to resume", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    except SystemExit as stop:  # the local Ray node's SIGTERM handler, after stopping its processes
        print(f"tanq {args.command}: stopped (exit {stop.code}); run it again to resume", file=sys.stderr)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
