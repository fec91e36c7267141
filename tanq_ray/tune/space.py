"""The trials of a sweep: Table 2 rows x grid axes x random draws, each a plain-data spec.

Trials are enumerated here, not by Tune's samplers, so the list is
deterministic for a given ``sweep`` section (``sweep.seed`` drives the random
draws): a resumed sweep can check that it is resuming the same trials, and
every trial has a readable name (``03-tanq-lambda_nce=2``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tanq_ray.config import Config, ConfigError, SweepConfig, load_config
from tanq_ray.models.ablations import ABLATION_ROWS


@dataclass(frozen=True)
class TrialSpec:
    """One trial: a Table 2 row plus dotted overrides of the base config."""

    index: int
    row: str
    model: str
    overrides: dict[str, Any]

    @property
    def name(self) -> str:
        axes = "-".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in self.overrides.items())
        return re.sub(r"[^A-Za-z0-9_.=-]", "_", f"{self.index:02d}-{self.row}" + (f"-{axes}" if axes else ""))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialSpec":
        return cls(**values)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _applies(key: str, model: str) -> bool:
    """An axis under ``models.<other>`` does not vary a ``model`` row."""
    parts = key.split(".")
    return not (len(parts) > 1 and parts[0] == "models" and parts[1] != model)


def _number(value: Any) -> float | None:
    """A bound as a float; YAML reads ``1e-4`` (no dot) as a string, so numeric strings count too."""
    try:
        return float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _draw(rng: np.random.Generator, key: str, distribution: str, values: list[Any]) -> Any:
    if distribution == "choice":
        if not values:
            raise ConfigError(f"sweep.random.{key}: 'choice' needs at least one value")
        return values[int(rng.integers(len(values)))]
    bounds = [_number(v) for v in values]
    if len(bounds) != 2 or None in bounds or not bounds[0] < bounds[1]:
        raise ConfigError(f"sweep.random.{key}: '{distribution}' needs [low, high] with low < high, got {values}")
    low, high = bounds
    if distribution == "uniform":
        return float(rng.uniform(low, high))
    if low <= 0:
        raise ConfigError(f"sweep.random.{key}: 'loguniform' needs low > 0, got {low}")
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def plan_trials(sweep: SweepConfig) -> list[TrialSpec]:
    """Every trial of the sweep, in a stable order."""
    rng = np.random.default_rng(sweep.seed)
    trials: list[TrialSpec] = []
    for row in sweep.rows:
        model = ABLATION_ROWS[row][0]
        grid = {key: values for key, values in sweep.grid.items() if _applies(key, model)}
        random_axes = {key: spec for key, spec in sweep.random.items() if _applies(key, model)}
        for point in itertools.product(*grid.values()):
            for _ in range(sweep.num_samples if random_axes else 1):
                overrides = dict(zip(grid, point)) | {
                    key: _draw(rng, key, distribution, list(values)) for key, (distribution, values) in random_axes.items()
                }
                trials.append(TrialSpec(len(trials), row, model, overrides))
    return trials


def trial_config(base: Config, trial: TrialSpec) -> Config:
    """The base config with the trial's row (``train.model``, ``models.<model>``) and axis overrides applied."""
    _, row_overrides = ABLATION_ROWS[trial.row]
    tree = base.model_dump(mode="json")
    tree["train"]["model"] = trial.model
    tree["models"][trial.model].update(row_overrides)
    overrides = [f"{key}={json.dumps(value)}" for key, value in trial.overrides.items()]
    try:
        return load_config(None, overrides, base=tree)
    except ConfigError as err:
        raise ConfigError(f"sweep trial '{trial.name}': {err}") from None


def fingerprint(trials: list[TrialSpec]) -> str:
    """A short hash of the trial list, to refuse resuming a sweep whose trials changed."""
    text = json.dumps([t.to_dict() for t in trials], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
