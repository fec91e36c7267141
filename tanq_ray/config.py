"""Typed configuration: YAML file + dotted ``key=value`` overrides -> :class:`Config`.

Every stage reads one :class:`Config`. Files live under ``configs/``; a command
line adds overrides such as ``ingest.shard_rows=512`` whose values are parsed as
YAML scalars/lists (``true``, ``3``, ``[0.41, 0.41, 1.5]``). Any unknown key or
invalid value raises :class:`ConfigError` naming the dotted key and what is
allowed, before any work starts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from tanq_ray.models.config import TRANSLATOR_NAMES, ModelsConfig, StrictModel, TranslatorName

ErasedTreatment = Literal["unlabelled", "redrawn"]
"""What becomes of a pseudo-hrT2 structure the translation erased (:mod:`tanq_ray.segment.erased_structures`)."""

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


class DataConfig(StrictModel):
    """Where the CrossMoDA-layout input lives (see README, "Your own CrossMoDA data")."""

    train_dir: Path | None = Field(
        None, description="ceT1 + Label + hrT2 training folder; unset = generate the phantom cohort"
    )
    eval_dir: Path | None = Field(None, description="hrT2 volumes to segment (never read by training)")
    eval_labels_dir: Path | None = Field(None, description="optional truth for eval_dir")
    train_hrT2_labels_dir: Path | None = Field(
        None,
        description="optional truth of train_dir's hrT2 (<case>_Label.nii.gz); only the target-supervised reference row reads it",
    )


class PhantomConfig(StrictModel):
    """Synthetic CrossMoDA-like cohort (``tanq phantom``)."""

    cases: int = Field(8, ge=1, description="labelled ceT1 subjects; as many unlabelled hrT2 subjects")
    eval_cases: int = Field(4, ge=0, description="hrT2 evaluation subjects, labels kept apart")
    size: int = Field(128, ge=48, le=1024, description="in-plane matrix of the finest acquisition")
    seed: int = 0


class IngestConfig(StrictModel):
    """NIfTI -> sharded Parquet slices (``tanq ingest``)."""

    spacing: tuple[float, float, float] = Field(
        (0.41, 0.41, 1.5), description="target voxel size in mm (x, y, z) after resampling"
    )
    crop_size: int = Field(256, ge=8, description="square center crop of each axial slice, in resampled voxels")
    image_size: int = Field(256, ge=8, description="crop resized to image_size x image_size")
    roi_shift_mm: tuple[float, float] = Field(
        (0.0, 0.0),
        description="in-plane shift (x towards right, y towards anterior, mm) of the crop from each volume's centre; "
        "the crop is the region of interest of every stage",
    )
    percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="robust intensity window mapped to [-1, 1]"
    )
    shard_rows: int = Field(256, ge=1, description="slices per Parquet shard")
    max_parallel: int | None = Field(
        None, ge=1, description="volumes processed at once (Ray tasks); unset = as many as the cluster's CPUs"
    )
    on_bad_volume: Literal["skip", "stop"] = Field(
        "skip", description="a corrupt or inconsistent volume is skipped with a warning, or stops the run"
    )

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError(f"every spacing must be > 0 mm, got {list(value)}")
        return value

    @field_validator("percentiles")
    @classmethod
    def _ordered_percentiles(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high <= 100:
            raise ValueError(f"need 0 <= low < high <= 100, got {list(value)}")
        return value


class TrainConfig(StrictModel):
    """Ray Train settings shared by both translators (``tanq train``)."""

    model: TranslatorName = "tanq"
    batch_size: int = Field(4, ge=1, description="slices per step per worker")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks)")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    bf16: bool = Field(True, description="bfloat16 autocast of each step on GPU (ignored on CPU)")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    max_failures: int = Field(2, ge=0, description="worker crashes survived by resuming from a checkpoint")
    visual_every: int = Field(5, ge=1, description="epochs between sample grids logged to MLflow")
    shuffle_buffer: int = Field(256, ge=0, description="slices in each worker's local shuffle buffer; 0 = no shuffle")
    crop_size: int | None = Field(
        None, ge=16, multiple_of=4, description="train on random square crops of this many pixels of each slice (as the "
        "public code trains on random 256 crops), translate whole slices; unset, or not smaller than the slices = whole slices"
    )
    load_size: int | None = Field(
        None, ge=16, description="resize each training slice to this many pixels before the crop (the public code: 286 "
        "before its 256 crops); unset = no resize"
    )
    flip: bool = Field(False, description="flip each training slice left-right at random, with its label (the public code does)")
    seed: int = 0

    @model_validator(mode="after")
    def _crop_fits_the_resize(self) -> "TrainConfig":
        if self.load_size is not None and (self.crop_size is None or self.crop_size > self.load_size):
            raise ValueError(f"load_size {self.load_size} needs a crop_size of at most {self.load_size} (got {self.crop_size})")
        return self


class SegmentConfig(StrictModel):
    """nnUNet on the multi-view pseudo-hrT2 volumes plus self-training (``tanq segment``)."""

    dataset_id: int = Field(501, ge=1, le=999)
    configurations: list[Literal["2d", "3d_fullres"]] = ["2d", "3d_fullres"]
    folds: int | Literal["all"] = Field(
        5,
        description="cross-validation folds per configuration, or 'all': one model on every training case (nnUNet's "
        "fold 'all'), no cross-validation, so no model selection or postprocessing (one configuration only)",
    )
    epochs: int = Field(1000, ge=1)
    iterations_per_epoch: int = Field(250, ge=1)
    batch_size: int | None = Field(8, ge=1, description="unset = nnUNet's planned batch size")
    initial_lr: float = Field(0.01, gt=0)
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd",
        description="nnUNet's SGD (Nesterov momentum 0.99, the paper's) or nnUNet's AdamW variant (amsgrad), which "
        "finds the VS in a few hundred iterations where SGD needs thousands (CPU budgets; use initial_lr 3e-3)",
    )
    foreground_oversampling: float | None = Field(
        None, ge=0, le=1,
        description="share of each batch drawn around a labelled structure (nnUNet's oversample_foreground_percent); "
        "unset = nnUNet's 0.33",
    )
    vs_patch_share: float | None = Field(
        None, ge=0, le=1,
        description="adapted rows: of the patches centred on a labelled structure (foreground_oversampling), the share "
        "centred on a VS, the rest on a cochlea, whichever structures each case holds (a case without the drawn one gets "
        "nnUNet's choice); unset = nnUNet's: one of the structures the case holds, at equal chance",
    )
    structure_contrast: tuple[float, float] | None = Field(
        None,
        description="augmentation: in a share of the training patches (structure_contrast_probability) each labelled "
        "structure is redrawn at a contrast to its surroundings drawn from [low, high] standard deviations of the patch, "
        "so a model trained on translations does not depend on the brightness a translator gave it; unset = nnUNet's "
        "augmentation only",
    )
    structure_contrast_probability: float = Field(
        0.5, ge=0, le=1,
        description="with structure_contrast: the chance that one labelled structure of one training patch is redrawn; "
        "the rest keep the contrast the translator gave them",
    )
    vs_texture: tuple[float, float] | None = Field(
        None,
        description="augmentation: in half of the training patches a smooth random texture whose strength is drawn from "
        "[low, high] standard deviations of the patch is added inside the VS, so a model trained on translations, whose "
        "VS are smoother inside than real ones, does not take a smooth inside for the VS; unset = no texture",
    )
    translated_structure_min_contrast: float | None = Field(
        None, gt=0,
        description="adapted rows: each connected piece of a VS or cochlea that a translation drew at less than this "
        "contrast to its surroundings (|mean inside - mean of a 2-pixel in-plane ring|, in standard deviations of the "
        "pseudo-hrT2 volume) is left unlabelled there (nnUNet's ignore label), so nnUNet is not taught a structure the "
        "image does not show; unset = every structure labelled",
    )
    translated_smoothing: bool = Field(
        False,
        description="adapted rows: each pseudo-hrT2 volume is filtered in-plane with [1, 2, 1] / 4 before nnUNet trains on "
        "it, which removes the checkerboard the translators' transposed convolutions draw (real hrT2 has none); off = "
        "the translations as drawn",
    )
    translated_erased_structures: ErasedTreatment = Field(
        "unlabelled",
        description="adapted rows, with translated_structure_min_contrast: what becomes of a piece the translation erased: "
        "'unlabelled' (nnUNet's ignore label) or 'redrawn' (labelled, and its mean moved to a contrast to its surroundings "
        "drawn from the part of structure_contrast at least translated_structure_min_contrast from 0, so nnUNet sees "
        "every labelled structure)",
    )
    network_width: int | None = Field(
        None, ge=1, description="features of the U-Net's first stage (doubling per stage, never above nnUNet's plan); "
        "unset = nnUNet's planned network (32); 8-16 trains on a CPU"
    )
    views: list[TranslatorName] = Field(
        list(TRANSLATOR_NAMES),
        description="translators whose pseudo-hrT2 the adapted rows train on: both = the paper's multi-view; one = a "
        "single-view ablation (the reference rows use none)",
    )
    self_training_rounds: int = Field(4, ge=0)
    self_training_warm_start: bool = Field(
        False,
        description="self-training: round r starts from round r-1's weights instead of nnUNet's random ones, so it goes "
        "on from what the previous round learned (the paper's 'retrained' read as continued); off = every round from scratch",
    )
    refine_pseudo_labels: bool = Field(False, description="clean pseudo-labels before retraining (paper's future work)")
    refine_min_confidence: float = Field(
        0.5, ge=0, le=1, description="refinement: foreground voxels with a lower softmax become background"
    )
    refine_vs_location_mm: float | None = Field(
        None, ge=0,
        description="refinement: only VS components lying (at least half) within this many mm of a VS of the labelled "
        "source scans, mirrored left-right, in ROI-centred coordinates may be kept; unset = any component",
    )
    refine_vs_max_fluid_share: float | None = Field(
        None, gt=0, le=1,
        description="refinement: a VS voxel of an hrT2 scan at least this share of the scan's fluid (CSF) level, its "
        "ROI's 99th intensity percentile, becomes background: on hrT2 the VS is darker than CSF (about half of it); "
        "unset = no VS voxel judged by its brightness",
    )
    refine_one_cochlea_per_side: bool = Field(
        False,
        description="refinement: on each side of the head keep only the cochlea component whose centroid lies nearest "
        "the mean cochlea position of the labelled source scans (ROI-centred mm, mirrored); off = every component",
    )
    pseudo_label_vs_margin_mm: float | None = Field(
        None, gt=0,
        description="self-training: background within this many mm of a pseudo-labelled VS is left unlabelled (nnUNet's "
        "ignore label), so a VS the previous round drew too small does not teach the next round that its outer part is "
        "background; unset = every voxel labelled",
    )
    pseudo_label_vs_missing_unlabelled: bool = Field(
        False,
        description="self-training, with pseudo_label_vs_margin_mm and refine_vs_location_mm: a pseudo-label left with "
        "no VS leaves every background voxel where the location rule allows a VS unlabelled, instead of teaching that "
        "the scan has none (every CrossMoDA scan has a VS); off = such a pseudo-label is trained on as it is",
    )
    refine_predictions: bool = Field(
        False,
        description="apply the refinement rules (refine_min_confidence, refine_vs_location_mm, "
        "refine_vs_max_fluid_share, refine_one_cochlea_per_side; one VS per scan) to every row's predictions of the evaluation hrT2 too, as "
        "post-processing; the raw predictions are kept beside them",
    )
    test_time_mirroring: bool = Field(True, description="nnUNet's mirrored predictions (off: 4x / 8x cheaper in 2d / 3d)")
    augmentation_processes: int = Field(
        0, ge=0, description="nnUNet augmentation processes per fold (0 = in the training process); a fold reserves 1 + this many CPUs"
    )
    fold_retries: int = Field(2, ge=0, description="Ray retries of a fold task that failed or died (it resumes from its checkpoint)")
    max_parallel_folds: int | None = Field(None, ge=1, description="fold tasks at once; unset = as many as the cluster holds")

    @field_validator("configurations")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one of '2d', '3d_fullres'")
        return value

    @field_validator("views")
    @classmethod
    def _distinct_views(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"list each of 'tanq', 'cyclegan' at most once, and at least one; got {value}")
        return value

    @field_validator("structure_contrast", "vs_texture")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError(f"give the range as [low, high]; got {list(value)}")
        return value

    @field_validator("vs_texture")
    @classmethod
    def _texture_not_negative(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] < 0:
            raise ValueError(f"a texture's strength is >= 0; got {list(value)}")
        return value

    @field_validator("folds")
    @classmethod
    def _at_least_one_fold(cls, value: int | str) -> int | str:
        if value != "all" and value < 1:
            raise ValueError("folds must be >= 1 or 'all'")
        return value

    @model_validator(mode="after")
    def _one_configuration_without_cross_validation(self) -> "SegmentConfig":
        if self.folds == "all" and len(self.configurations) > 1:
            raise ValueError(
                f"folds 'all' trains without cross-validation, so nnUNet cannot choose between configurations "
                f"{self.configurations}: list one configuration or use folds >= 2"
            )
        return self

    @model_validator(mode="after")
    def _redrawn_structures_need_a_visible_contrast_range(self) -> "SegmentConfig":
        if self.translated_erased_structures != "redrawn":
            return self
        least, contrast = self.translated_structure_min_contrast, self.structure_contrast
        if least is None or contrast is None:
            raise ValueError(
                "translated_erased_structures 'redrawn' needs translated_structure_min_contrast (which pieces are erased) "
                "and structure_contrast (the range a redrawn piece's contrast is drawn from)"
            )
        if contrast[0] >= -least and contrast[1] <= least:
            raise ValueError(
                f"translated_erased_structures 'redrawn' draws contrasts from structure_contrast {list(contrast)} at least "
                f"translated_structure_min_contrast {least} from 0, and there are none"
            )
        return self

    @model_validator(mode="after")
    def _missing_vs_needs_the_margin_and_the_location_rule(self) -> "SegmentConfig":
        if self.pseudo_label_vs_missing_unlabelled and (
            self.pseudo_label_vs_margin_mm is None or self.refine_vs_location_mm is None
        ):
            raise ValueError(
                "pseudo_label_vs_missing_unlabelled needs pseudo_label_vs_margin_mm (the round trains on partial labels) "
                "and refine_vs_location_mm (where a VS can be); set both"
            )
        return self

    @property
    def fold_ids(self) -> tuple[int | str, ...]:
        """nnUNet's fold names of each configuration: ``0 .. folds-1``, or ``("all",)``."""
        return ("all",) if self.folds == "all" else tuple(range(self.folds))


class SweepConfig(StrictModel):
    """A Ray Tune sweep over translator configurations (``tanq sweep``; docs/usage.md, "tanq sweep").

    Trials = ``rows`` x every combination of ``grid`` x ``num_samples`` draws of
    ``random``. Axis keys are dotted config keys; an axis under
    ``models.<name>`` only multiplies the rows whose model is ``<name>``.
    """

    name: str = Field("ablation", pattern=r"^[A-Za-z0-9_.-]+$", description="folder and run name of the sweep")
    rows: list[str] = Field(
        ["cut", "qs_attn", "cyclegan", "tanq_wo_rain", "tanq_wo_segdecoder", "tanq"],
        description="translator rows of the paper's Table 2 (see tanq_ray.models.ablations)",
    )
    grid: dict[str, list[Any]] = Field({}, description="dotted key -> values, every combination is tried")
    random: dict[str, tuple[Literal["uniform", "loguniform", "choice"], list[Any]]] = Field(
        {}, description="dotted key -> (distribution, [low, high] or choices), drawn num_samples times"
    )
    num_samples: int = Field(1, ge=1, description="draws of the random axes per row and grid point")
    seed: int = 0
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="unset = as many as the cluster's CPUs/GPUs hold (workers + half a CPU for data each)"
    )
    score_slices: int = Field(64, ge=1, description="labelled ceT1 slices translated for the structure score")
    downstream: bool = Field(
        False, description="also train nnUNet (segment.*) on each trial's translations and score the labelled evaluation hrT2"
    )
    rank_by: Literal["structure_score", "vs_contrast_gap", "cochlea_contrast_gap", "dice_mean"] | None = Field(
        None,
        description="what orders the table, best first: unset = dice_mean with downstream, else structure_score; "
        "a contrast gap (lowest first) needs labelled evaluation hrT2 (docs/study.md, 'Which cheap score predicts Dice')",
    )

    @model_validator(mode="after")
    def _dice_needs_downstream(self) -> "SweepConfig":
        if self.rank_by == "dice_mean" and not self.downstream:
            raise ValueError("rank_by 'dice_mean' needs downstream: true (nnUNet on each trial's translations)")
        return self

    @field_validator("rows")
    @classmethod
    def _known_rows(cls, value: list[str]) -> list[str]:
        from tanq_ray.models.ablations import ABLATION_ROWS

        unknown = [row for row in value if row not in ABLATION_ROWS]
        if unknown or not value or len(set(value)) != len(value):
            raise ValueError(f"rows must be distinct names from {list(ABLATION_ROWS)}, got {value}")
        return value


class StudyConfig(StrictModel):
    """The ablation study (``tanq study``; docs/study.md): Table 2's rows, each trained once per seed, scored together.

    ``rows`` are segmentation rows: Table 2's (``tanq_ray.models.ablations.SEGMENTATION_ROWS``)
    and the reference rows ``source-only`` and ``target-supervised``.
    """

    name: str = Field("table2", pattern=r"^[A-Za-z0-9_.-]+$", description="folder and run name of the study")
    rows: list[str] = Field(
        ["cut", "cyclegan", "qs_attn", "multi_view", "tanq_wo_rain", "tanq_wo_segdecoder", "tanq", "source-only", "target-supervised"],
        description="segmentation rows: Table 2's and the reference rows",
    )
    seeds: list[int] = Field([0, 1, 2], description="each row is trained once per seed (translators: train.seed; nnUNet: a new training)")
    grid: dict[str, list[Any]] = Field(
        {},
        description="models.<model>.<field> -> values: each studied Table 2 row gains a row per combination, "
        "its translators of that model trained with those values (tanq_ray.study_rows)",
    )
    compare_to: str = Field("tanq", description="the row every other row's paired t-test is against (the paper's 'Ours')")

    @field_validator("rows")
    @classmethod
    def _known_rows(cls, value: list[str]) -> list[str]:
        from tanq_ray.models.ablations import SEGMENTATION_ROWS

        known = [*SEGMENTATION_ROWS, "source-only", "target-supervised"]
        unknown = [row for row in value if row not in known]
        if unknown or not value or len(set(value)) != len(value):
            raise ValueError(f"rows must be distinct names from {known}, got {value}")
        return value

    @field_validator("grid")
    @classmethod
    def _model_settings(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            parts = key.split(".")
            settings = ModelsConfig.model_fields[parts[1]].annotation if len(parts) == 3 and parts[0] == "models" and parts[1] in TRANSLATOR_NAMES else None
            if settings is None or parts[2] not in settings.model_fields:
                raise ValueError(f"'{key}' is not a translator setting: grid keys are models.<{'|'.join(TRANSLATOR_NAMES)}>.<field>")
            if not values or len({repr(v) for v in values}) != len(values):
                raise ValueError(f"'{key}' needs one or more distinct values, got {values}")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"seeds must be one or more distinct integers, got {value}")
        return value

    @model_validator(mode="after")
    def _compared_row_is_studied(self) -> "StudyConfig":
        if self.compare_to not in self.rows:
            raise ValueError(f"compare_to '{self.compare_to}' is not among the rows {self.rows}")
        return self


class TrackingConfig(StrictModel):
    """MLflow tracking (see :mod:`tanq_ray.tracking`)."""

    tracking_uri: str | None = Field(
        None, description="unset = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory"
    )
    experiment: str = Field("tanq-ray", min_length=1)


class RayConfig(StrictModel):
    """How to reach Ray; unset address joins the job's cluster or starts a local one."""

    address: str | None = None


class Config(StrictModel):
    """The whole recipe's configuration."""

    output_dir: Path = Field(Path("runs/default"), description="root of all stage outputs")
    data: DataConfig = DataConfig()
    phantom: PhantomConfig = PhantomConfig()
    ingest: IngestConfig = IngestConfig()
    models: ModelsConfig = ModelsConfig()
    train: TrainConfig = TrainConfig()
    segment: SegmentConfig = SegmentConfig()
    sweep: SweepConfig = SweepConfig()
    study: StudyConfig = StudyConfig()
    tracking: TrackingConfig = TrackingConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _eval_labels_need_eval_dir(self) -> "Config":
        if self.data.eval_labels_dir is not None and self.data.eval_dir is None:
            raise ValueError("data.eval_labels_dir is set but data.eval_dir is not")
        return self

    def stage_dir(self, stage: str) -> Path:
        """Output folder of one stage, e.g. ``<output_dir>/ingest``."""
        return self.output_dir / stage

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of every value, as logged to MLflow params."""
        return dict(_flatten(self.model_dump(mode="json")))

    def section_params(self, *sections: str) -> dict[str, Any]:
        """The dotted keys under ``sections`` (e.g. ``"ingest"``, ``"models.tanq"``): what a stage run logs as params."""
        return {key: value for key, value in self.flat().items() if any(key.startswith(s + ".") for s in sections)}


def _flatten(tree: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def _known_keys(model: type[StrictModel]) -> list[str]:
    return sorted(model.model_fields)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``a.b.c``, refusing keys the schema lacks."""
    model: type[StrictModel] = Config
    node = tree
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the top level"
        if part not in model.model_fields:
            raise ConfigError(f"unknown key '{dotted}': '{part}' is not one of {_known_keys(model)} at {where}")
        annotation = model.model_fields[part].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, StrictModel)
        if depth == len(parts) - 1:
            if is_section and not isinstance(value, dict):
                raise ConfigError(f"key '{dotted}' is a section; set one of its keys: {_known_keys(annotation)}")
            node[part] = value
            return
        if not is_section:
            raise ConfigError(f"key '{'.'.join(parts[: depth + 1])}' is a value, not a section: cannot set '{dotted}'")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"key '{'.'.join(parts[: depth + 1])}' must be a mapping in the config file")
        model = annotation


def parse_override(text: str) -> tuple[str, Any]:
    """``"ingest.shard_rows=512"`` -> ``("ingest.shard_rows", 512)`` (value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.epochs=3)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML ({err})") from None
    return key.strip(), value


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "config"
    given = error.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"  # a section's own check names its keys
    return f"key '{key}': {error['msg'].removeprefix('Value error, ')}{shown}"


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), base: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (or start from ``base``, a config tree, or the defaults) and apply overrides."""
    tree: dict[str, Any] = copy.deepcopy(base) if base is not None else {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            shipped = sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []
            raise ConfigError(f"config file '{path}' does not exist (shipped configs: {shipped})")
        tree = _read_config_file(path, seen=())
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in err.errors())) from None


BASE_KEY = "base"
"""A config file's optional ``base: other.yaml`` (relative to the file): its settings, with this file's on top."""


def _read_config_file(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A config file's tree, merged over its ``base`` file's (recursively), checked for unknown keys."""
    if path.resolve() in seen:
        raise ConfigError(f"config file '{path}' is its own base (through {[str(p) for p in seen]})")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' (the base of '{seen[-1]}') does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(tree).__name__}")
    base = tree.pop(BASE_KEY, None)
    _check_tree(tree, Config, "")
    if base is None:
        return tree
    return _merged(_read_config_file(path.parent / str(base), (*seen, path.resolve())), tree, Config)


def _merged(base: dict[str, Any], top: dict[str, Any], model: type[StrictModel]) -> dict[str, Any]:
    """``top`` over ``base``: sections (e.g. ``models.tanq``) merge key by key; any other value of ``top`` replaces ``base``'s."""
    merged = dict(base)
    for key, value in top.items():
        annotation = model.model_fields[key].annotation
        section = isinstance(annotation, type) and issubclass(annotation, StrictModel)
        both = section and isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value, annotation) if both else value
    return merged


def _check_tree(tree: dict[str, Any], model: type[StrictModel], prefix: str) -> None:
    """Name unknown keys of a config file with the allowed ones (pydantic's message lacks them)."""
    for key, value in tree.items():
        if key not in model.model_fields:
            where = prefix.rstrip(".") or "the top level"
            raise ConfigError(f"unknown key '{prefix}{key}': not one of {_known_keys(model)} at {where}")
        annotation = model.model_fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, StrictModel) and isinstance(value, dict):
            _check_tree(value, annotation, f"{prefix}{key}.")


def dump_config(config: Config) -> str:
    """The resolved config as YAML (what is logged as the run's ``config.yaml`` artifact)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
