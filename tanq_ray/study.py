"""``tanq study``: the paper's ablation (Table 2) on one cohort, every row once per seed, one table with paired tests.

The rows are ``study.rows`` and the variants ``study.grid`` adds
(:mod:`tanq_ray.study_rows`). Stages, each recorded like the pipeline's
(:mod:`tanq_ray.runner`), so running the study again trains nothing that finished:

1. ``ingest`` (after the phantom when ``data.train_dir`` is unset);
2. ``translators``: every translator the studied rows need (a Table 2
   translator row, with a grid point's settings for a variant), once per seed
   (``train.seed``), as one Ray Tune sweep (:mod:`tanq_ray.tune.sweep`: trials
   at once as the cluster holds them, an interrupted trial resumes from its
   checkpoint, a finished one is never retrained);
3. ``translate seed <s>``: that seed's translators turn every ceT1 volume into
   pseudo-hrT2, one view per translator;
4. ``<row> seed <s>``: one nnUNet per row and seed (``segment.*``, no
   self-training, as in Table 2) on the row's views
   (:data:`~tanq_ray.models.ablations.SEGMENTATION_ROWS`), or for the reference
   rows on ceT1 (source-only) or labelled real hrT2 (target-supervised); as many
   rows at once as the cluster's CPUs hold fold tasks; each scores the evaluation set;
5. ``table``: Table 2 over seeds and cases (:func:`study_table`), the paper's
   claims tested on it (:mod:`tanq_ray.study_claims`), the rank correlation of
   cheap translation scores with Dice (:func:`score_correlations`), a bar chart
   and prediction pictures.

Everything goes under ``<output_dir>/study/<study.name>/`` (with the stage
records in its ``pipeline/``; the shards and translators' sweeps are shared
with other commands) and one MLflow parent run, with a child run per (row,
seed) and one for the translators' sweep.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from tanq_ray.cluster import ensure_ray
from tanq_ray.config import Config, ConfigError, SweepConfig
from tanq_ray.evaluate import comparison_table, readable_view, summarize
from tanq_ray.io_utils import atomic_path, write_text_atomic
from tanq_ray.runner import Inputs, Runner, Stage, StageContext
from tanq_ray.segment.roi_volumes import ROI_FOLDER
from tanq_ray.self_training import REFERENCE_ROWS, SOURCE_ONLY, TARGET_SUPERVISED, reference_cases, translated_training_cases
from tanq_ray.setting_kinds import folder_fingerprint, result_settings
from tanq_ray.stage_keys import stage_key, train_key
from tanq_ray.tables import Table
from tanq_ray.stage_records import RECORDS_FOLDER
from tanq_ray.stages.data import INGEST, DataFolders
from tanq_ray.stages.evaluate import prediction_pictures
from tanq_ray.stages.segment import RowOutputs, reference_inputs, row_share, train_and_log_row
from tanq_ray.stages.translate import Translations
from tanq_ray.study_claims import PAPER_CLAIMS, claims_table
from tanq_ray.study_rows import StudyRow, Translator, studied_translators, study_rows
from tanq_ray.tracking import Tracker
from tanq_ray.translate import TranslatedCase, translate_cohort
from tanq_ray.tune.space import TrialSpec, trial_config
from tanq_ray.tune.sweep import plan_sweep, run_planned_sweep
from tanq_ray.tune.trial import read_trial_record, trial_dir

log = logging.getLogger(__name__)

LEDGER_FILE = "translators.json"
CHEAP_SCORES = ("structure_score", "vs_contrast_gap", "cochlea_contrast_gap")
"""Translation scores that cost seconds, tested as predictors of the Dice that costs an nnUNet training."""


def study_dir(config: Config) -> Path:
    return config.stage_dir("study") / config.study.name


def seed_dir(config: Config, seed: int) -> Path:
    return study_dir(config) / f"seed-{seed}"


def row_dir(config: Config, row: StudyRow, seed: int) -> Path:
    """A row's nnUNet work folder; its name (``<row>-seed<s>``) also names its logs and progress lines."""
    return seed_dir(config, seed) / f"{row.name}-seed{seed}"


def translator_trial(translator: Translator, seed: int, index: int = 0) -> TrialSpec:
    """The sweep trial that trains ``translator`` with ``train.seed = seed``."""
    return TrialSpec(index, translator.row, translator.model, {"train.seed": seed, **dict(translator.overrides)})


def translators_config(config: Config, trials: list[TrialSpec]) -> Config:
    """The sweep that trains exactly ``trials``, named after them (so an interrupted one resumes when they are the same)."""
    name = f"{config.study.name}-translators-{stage_key({'trials': [t.to_dict() for t in trials]})[:8]}"
    sweep = SweepConfig(
        name=name,
        rows=list(dict.fromkeys(t.row for t in trials)),
        score_slices=config.sweep.score_slices,
        max_concurrent_trials=config.sweep.max_concurrent_trials,
    )
    return config.model_copy(update={"sweep": sweep})


def translator_key(config: Config, translator: Translator, seed: int) -> str:
    """What a trained translator depends on: the shards, its model settings (row and overrides) and the training loop with ``seed``."""
    trial = trial_config(config, translator_trial(translator, seed))
    return train_key(trial, trial.train.model)


@dataclass(frozen=True)
class TrainedTranslators:
    """The ``translators`` stage's outputs: per seed, per translator, its ledger entry (generator, cheap scores)."""

    entries: dict[int, dict[str, dict[str, Any]]]
    """seed -> translator name (:attr:`~tanq_ray.study_rows.Translator.name`) -> ledger entry."""

    def generators(self, seed: int) -> dict[str, Path]:
        return {row: Path(entry["generator"]) for row, entry in self.entries[seed].items()}

    def to_json(self) -> dict[str, Any]:
        return {str(seed): per_row for seed, per_row in self.entries.items()}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "TrainedTranslators":
        return cls({int(seed): per_row for seed, per_row in values.items()})


def train_translators(context: StageContext) -> TrainedTranslators:
    """Each translator the rows need, for each seed, from the ledger when trained before, else trained by one sweep.

    The ledger (``translators.json``) maps :func:`translator_key` to the
    generator and its trial's cheap scores (structure score, contrast gaps), so a study that gains a row, a grid
    value or a seed trains only what is new (a grid value that repeats a row's own setting trains nothing),
    and one whose translator settings changed retrains. Finished translators enter the ledger even when the sweep
    fails or is interrupted, so nothing that finished trains again; an
    unfinished one resumes from its checkpoint when the next sweep has the same
    missing set (same name, :func:`translators_config`).
    """
    config, tracker = context.config, context.tracker
    ledger_path = study_dir(config) / LEDGER_FILE
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    ledger = {key: entry for key, entry in ledger.items() if Path(entry["generator"]).is_file()}
    translators, seeds = studied_translators(study_rows(config)), config.study.seeds
    keys = {(translator, seed): translator_key(config, translator, seed) for seed in seeds for translator in translators}
    missing: dict[str, tuple[Translator, int]] = {}  # one trial per distinct key
    for pair, key in keys.items():
        if key not in ledger:
            missing.setdefault(key, pair)
    if missing:
        trials = [translator_trial(translator, seed, index) for index, (translator, seed) in enumerate(missing.values())]
        sweep_config = translators_config(config, trials)
        plan = plan_sweep(sweep_config, trials)
        tags = {"sweep": sweep_config.sweep.name}
        try:
            with tracker.stage("sweep", context.parent, name="translators", tags=tags, resume_run_id=plan.resume_run_id) as run:
                run_planned_sweep(plan, run)
        finally:  # also after a failure or an interrupt: what finished is never trained again, whatever the next sweep is
            for trial, key in zip(plan.trials, missing):
                metrics = read_trial_record(trial_dir(plan.folder, trial)).get("metrics")
                if metrics is not None:
                    ledger[key] = {
                        "generator": str(trial_generator(plan.folder, trial)),
                    } | {score: metrics.get(score) for score in CHEAP_SCORES}
            write_text_atomic(ledger_path, json.dumps(ledger, indent=1))
    return TrainedTranslators({seed: {t.name: ledger[keys[(t, seed)]] for t in translators} for seed in seeds})


def trial_generator(sweep_folder: Path, trial: TrialSpec) -> Path:
    """Where a sweep trial's training exported its generator (:func:`tanq_ray.train.launcher.launch_training`)."""
    return trial_dir(sweep_folder, trial) / trial.model / "generator.pt"


def translate_seed(context: StageContext, seed: int, trained: TrainedTranslators) -> Translations:
    """Pseudo-hrT2 of every ceT1 volume with each of ``seed``'s translators (one view per translator row)."""
    config = context.config
    with context.tracker.stage("translate", context.parent, name=f"translate seed {seed}", tags={"seed": seed}) as run:
        ensure_ray(config)
        out = seed_dir(config, seed) / "translate"
        result = translate_cohort(config.stage_dir("ingest"), trained.generators(seed), out, use_gpu=config.train.use_gpu or None)
        run.log_metrics({"volumes": result.volumes, "seconds": result.seconds})
    return Translations(result.cases)


def train_row(context: StageContext, row: StudyRow, seed: int, translated: list[TranslatedCase], folders: DataFolders) -> RowOutputs:
    """One row's nnUNet for one seed, under a child run: trained, its evaluation predicted and scored."""
    config, tracker = context.config, context.tracker
    tags = {"row": row.title, "seed": seed, "study": config.study.name}
    name = f"{row.title} seed {seed}"
    with tracker.stage("segment", context.parent, name=name, tags=tags, params=config.section_params("segment")) as run:
        ensure_ray(config)
        if row.base in REFERENCE_ROWS:
            cases = reference_cases(config, row.base, folders.train_dir, folders.train_hrT2_labels_dir)
        else:
            views = [translator.name for translator in row.translators]
            cases = translated_training_cases(translated, config.segment, row_dir(config, row, seed), views)
        result = train_and_log_row(config, tracker, run, row_dir(config, row, seed), cases, folders)
    return RowOutputs.of(result)


def per_seed_cases(outputs: dict[int, RowOutputs]) -> list[dict[str, Any]]:
    """One row's per-case scores over seeds, each case named ``<case> seed <s>`` so tests pair by case and seed."""
    return [case | {"case_id": f"{case['case_id']} seed {seed}"} for seed, out in outputs.items() for case in out.per_case or []]


def study_runs(rows: dict[StudyRow, dict[int, RowOutputs]]) -> dict[str, list[dict[str, Any]]]:
    """Each scored row's per-case results over seeds, by its table name."""
    runs = {row.title: per_seed_cases(outputs) for row, outputs in rows.items()}
    return {name: cases for name, cases in runs.items() if cases}


def table2_runs(rows: dict[StudyRow, dict[int, RowOutputs]]) -> dict[str, list[dict[str, Any]]]:
    """The per-case scores over seeds of the rows as Table 2 defines them (no grid overrides), by row name (``tanq``)."""
    return {row.base: per_seed_cases(outputs) for row, outputs in rows.items() if not row.overrides}


def study_table(config: Config, rows: dict[StudyRow, dict[int, RowOutputs]]) -> Table:
    """Table 2: mean ± std over seeds and cases per row, gap closed between the reference rows, p against ``compare_to``.

    p-values are paired t-tests of per-case mean Dice, paired by case and seed.
    """
    runs = study_runs(rows)
    reference = StudyRow(config.study.compare_to).title
    bounds = (SOURCE_ONLY, TARGET_SUPERVISED) if {SOURCE_ONLY, TARGET_SUPERVISED} <= set(runs) else None
    return comparison_table(runs, reference=reference if reference in runs else None, bounds=bounds)


def cheap_scores(trained: TrainedTranslators) -> dict[tuple[str, int], dict[str, float]]:
    """Per (translator name, seed): the cheap scores its sweep trial measured (NaN where it measured none)."""
    return {
        (translator, seed): {name: math.nan if entry.get(name) is None else float(entry[name]) for name in CHEAP_SCORES}
        for seed, per_row in trained.entries.items()
        for translator, entry in per_row.items()
    }


def score_correlations(rows: dict[StudyRow, dict[int, RowOutputs]], scores: dict[tuple[str, int], dict[str, float]]) -> Table:
    """Spearman's rank correlation of each cheap score with mean Dice over (row, seed), rows that use translators.

    A row's score is the mean over its translators (e.g. Multi-view: CycleGAN's
    and QS-Attn's). A useful score ranks rows as their Dice does (rho near +1
    for the structure score, near -1 for a contrast gap).
    """
    points: list[tuple[dict[str, float], float]] = []
    for row, outputs in rows.items():
        for seed, out in outputs.items():
            summary = out.summary or {}
            if row.translators and "dice_mean" in summary:
                per_translator = [scores[(t.name, seed)] for t in row.translators]
                mean = {name: float(np.mean([s[name] for s in per_translator])) for name in CHEAP_SCORES}
                points.append((mean, float(summary["dice_mean"])))
    table_rows = []
    for name in CHEAP_SCORES:
        pairs = [(score[name], dice) for score, dice in points if not math.isnan(score[name])]
        ranked = len(pairs) >= 3 and all(len(set(values)) > 1 for values in zip(*pairs))  # a constant has no ranks
        rho, p = stats.spearmanr(*zip(*pairs)) if ranked else (math.nan, math.nan)
        table_rows.append({"score": name, "spearman_rho": float(rho), "p": float(p), "points": len(pairs)})
    return Table(["score", "spearman_rho", "p", "points"], table_rows)


def bar_chart(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Mean Dice (VS, cochlea, mean) per row of :func:`study_runs`, one std over seeds and cases as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summaries = [summarize(cases) for cases in runs.values()]
    figure = Figure(figsize=(max(6.0, 1.1 * len(runs)), 4.0))
    axes = figure.add_subplot()
    width = 0.27
    positions = np.arange(len(runs))
    for offset, (metric, label) in enumerate((("dice_vs", "VS"), ("dice_cochlea", "cochlea"), ("dice_mean", "mean"))):
        means = [summary[metric] for summary in summaries]
        stds = [summary[f"{metric}_std"] for summary in summaries]
        axes.bar(positions + (offset - 1) * width, means, width, yerr=stds, capsize=2, label=label)
    axes.set_xticks(positions, list(runs), rotation=30, ha="right")
    axes.set_ylabel("Dice")
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left", ncols=3)
    figure.tight_layout()
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path


@dataclass(frozen=True)
class StudyTables:
    """The ``table`` stage's outputs: Table 2 and, where the study's rows allow them, the paper's claims and the cheap-score correlations."""

    table: Path
    claims: Path | None
    cheap_scores: Path | None

    def to_json(self) -> dict[str, str | None]:
        return {"table": str(self.table), "claims": _text(self.claims), "cheap_scores": _text(self.cheap_scores)}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "StudyTables":
        return cls(Path(values["table"]), _path(values.get("claims")), _path(values.get("cheap_scores")))


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


def row_stage_name(row: StudyRow, seed: int) -> str:
    return f"{row.title} seed {seed}"


def row_stage(row: StudyRow, seed: int) -> Stage:
    """Stage ``<row> seed <s>``: a reference row needs only the data; a Table 2 row, its seed's translations.

    A Table 2 row is keyed by its own translators only (not by every translator
    of the seed), so a row added to the study retrains no other row.
    """
    adapted = row.base not in REFERENCE_ROWS
    translate = f"translate seed {seed}"

    def reads(config: Config, inputs: Inputs) -> dict[str, Any]:
        folders = inputs["ingest"]
        source = (
            {"translators": [translator_key(config, translator, seed) for translator in row.translators]}
            if adapted
            else reference_inputs(row.base, folders)
        )
        segment = {"segment": result_settings(config, "segment"), "eval": folder_fingerprint(folders.eval_dir)}
        return source | segment | {"row": row.name, "seed": seed, "views": [translator.name for translator in row.translators]}

    return Stage(
        name=row_stage_name(row, seed),
        outputs=RowOutputs,
        run=lambda context, inputs: train_row(context, row, seed, inputs[translate].cases if adapted else [], inputs["ingest"]),
        needs=("ingest", translate) if adapted else ("ingest",),
        reads=reads,
        keyed_by=("ingest",),
        work_dirs=lambda config: [row_dir(config, row, seed)],
        share=row_share,
    )


def write_tables(context: StageContext, rows: dict[StudyRow, dict[int, RowOutputs]], trained: TrainedTranslators | None, folders: DataFolders) -> StudyTables:
    """Table 2, the paper's claims, the cheap-score correlations, the bar chart and prediction pictures, logged to the table's and the study's runs."""
    config = context.config
    out = study_dir(config)
    with context.tracker.stage("table", context.parent, name="table") as run:
        results = study_table(config, rows)
        _, comma_separated = results.write(out / "results")
        markdown = write_text_atomic(out / "results.md", readable_view(results).markdown())
        files = [markdown, comma_separated, bar_chart(study_runs(rows), out / "dice.png")]
        claims = claims_table(table2_runs(rows))
        claims_markdown = None
        if claims.rows:
            claims_markdown, claims_csv = claims.write(out / "claims")
            files += [claims_markdown, claims_csv]
        correlations = None
        if trained is not None:
            correlations, _ = score_correlations(rows, cheap_scores(trained)).write(out / "cheap_scores")
            files += [correlations, out / "cheap_scores.csv"]
        first_seed = config.study.seeds[0]
        predictions = {r.title: per_seed[first_seed].eval_predictions / ROI_FOLDER for r, per_seed in rows.items()}
        files += prediction_pictures(config, folders, predictions, out)
        for path in files:
            run.log_artifact(path)
            context.parent.log_artifact(path)
    return StudyTables(markdown, claims_markdown, correlations)


def study_stages(config: Config) -> list[Stage]:
    """The study's stages in order (module docstring)."""
    seeds, rows = config.study.seeds, study_rows(config)
    declared = [INGEST]
    translators = studied_translators(rows)
    if translators:
        declared.append(
            Stage(
                name="translators",
                outputs=TrainedTranslators,
                run=lambda context, inputs: train_translators(context),
                needs=("ingest",),
                reads=lambda config, inputs: {
                    "translators": sorted({translator_key(config, t, s) for s in seeds for t in translators}),
                    "score_slices": config.sweep.score_slices,
                },
            )
        )
        declared += [
            Stage(
                name=f"translate seed {seed}",
                outputs=Translations,
                run=lambda context, inputs, seed=seed: translate_seed(context, seed, inputs["translators"]),
                needs=("translators",),
                reads=lambda config, inputs, seed=seed: {"seed": seed},
            )
            for seed in seeds
        ]
    declared += [row_stage(row, seed) for seed in seeds for row in rows]
    row_names = tuple(row_stage_name(row, seed) for seed in seeds for row in rows)

    def tables(context: StageContext, inputs: Inputs) -> StudyTables:
        by_row = {row: {seed: inputs[row_stage_name(row, seed)] for seed in seeds} for row in rows}
        return write_tables(context, by_row, inputs.get("translators"), inputs["ingest"])

    declared.append(
        Stage(
            name="table",
            outputs=StudyTables,
            run=tables,
            needs=("ingest", *(["translators"] if translators else []), *row_names),
            reads=lambda config, inputs: {
                "labels": folder_fingerprint(inputs["ingest"].eval_labels_dir),
                "claims": [claim.label for claim in PAPER_CLAIMS],
            },
        )
    )
    return declared


@dataclass(frozen=True)
class StudyResult:
    """Where the study's outputs are, and its tables."""

    folder: Path
    table_markdown: str
    claims_markdown: str
    correlations_markdown: str
    stages: Table
    run_id: str
    tracking_hint: str


def check_study_data(config: Config) -> None:
    """Before any work: a study scores every row, so it needs evaluation labels, and the target-supervised row truth."""
    data = config.data
    if data.train_dir is None:  # the phantom has truth for its training hrT2, and labels for its evaluation cases
        has_labels, has_truth = config.phantom.eval_cases > 0, True
    else:
        has_labels, has_truth = data.eval_labels_dir is not None, data.train_hrT2_labels_dir is not None
    if not has_labels:
        raise ConfigError("a study scores every row: it needs evaluation labels (data.eval_dir and data.eval_labels_dir)")
    if TARGET_SUPERVISED in config.study.rows and not has_truth:
        raise ConfigError("the target-supervised row needs data.train_hrT2_labels_dir (truth of the training hrT2)")


def run_study(config: Config) -> StudyResult:
    """Every stage of the study (module docstring); finished ones with unchanged inputs are skipped.

    The study's stage records live in its own folder: two studies in one
    ``output_dir`` never share a stage name.
    """
    import ray

    check_study_data(config)
    tracker = Tracker(config)
    out = study_dir(config)
    with tracker.invocation("study", tags={"study": config.study.name}) as parent:
        ensure_ray(config)
        runner = Runner(StageContext(config, tracker, parent), study_stages(config), ray.cluster_resources(), out / RECORDS_FOLDER)
        outputs = runner.run()
        stage_table = runner.table()
        parent.log_text(stage_table.markdown(), "stages.md")
    tables: StudyTables = outputs["table"]
    claims, correlations = (path.read_text() if path is not None else "" for path in (tables.claims, tables.cheap_scores))
    return StudyResult(out, tables.table.read_text(), claims, correlations, stage_table, parent.run_id, tracker.ui_hint())
