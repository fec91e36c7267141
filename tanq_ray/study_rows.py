"""The rows of a study: Table 2's segmentation rows, the reference rows, and the variants ``study.grid`` adds.

A study row is one nnUNet per seed, trained on the pseudo-hrT2 views of its
translators (Table 2's rows, :data:`~tanq_ray.models.ablations.SEGMENTATION_ROWS`)
or, for a reference row, on ceT1 or labelled real hrT2. A translator is a
Table 2 translator row (:data:`~tanq_ray.models.ablations.ABLATION_ROWS`)
with, for a variant, overrides of its model's settings.

``study.grid`` maps ``models.<model>.<field>`` keys to values. For every
studied Table 2 row and every combination of the grid's values, the study
adds a row whose translators of that model take those values (its other
translators unchanged), right after the row it varies::

    study.rows: [tanq, source-only]
    study.grid: {models.tanq.decoder_norm: [in, rn]}
    -> Ours, Ours [decoder_norm=in], Ours [decoder_norm=rn], source-only

"Ours [decoder_norm=in]" trains on CycleGAN's view and on a TANQ translator
trained with ``decoder_norm: in``; CycleGAN's view is the one "Ours" uses, so
it trains once. A row none of whose translators has a gridded model (e.g.
CycleGAN under a ``models.tanq.*`` grid) gains no variant.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from tanq_ray.config import Config, ConfigError
from tanq_ray.models.ablations import ABLATION_ROWS, PAPER_NAMES, SEGMENTATION_ROWS

VARIANT_MARK = "--"
"""Joins a row's name and each of its overrides (``tanq--decoder_norm-in``): names keep to letters, digits and
``_ . -``, as folder, file and nnUNet case names need (translation views: :func:`tanq_ray.translate.translate_cohort`)."""

Overrides = tuple[tuple[str, Any], ...]
"""Dotted ``models.<model>.<field>`` keys and values, in the grid's order (hashable, unlike a dict)."""


def _field(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _named(value: Any) -> str:
    """A value as it appears in a name: ``rn_rain`` -> ``rn-rain``, ``(0, 4, 8)`` -> ``0-4-8``."""
    if isinstance(value, tuple):
        return "-".join(_named(item) for item in value)
    return re.sub(r"[^A-Za-z0-9.]+", "-", str(value)).strip("-")


def _shown(value: Any) -> Any:
    """A value as the table shows it: tuples (frozen lists) as lists."""
    return [_shown(item) for item in value] if isinstance(value, tuple) else value


def _suffix(overrides: Overrides) -> str:
    return "".join(f"{VARIANT_MARK}{_field(key)}-{_named(value)}" for key, value in overrides)


def _model(key: str) -> str:
    """The model a ``models.<model>.<field>`` key sets."""
    return key.split(".")[1]


@dataclass(frozen=True)
class Translator:
    """A view the study trains: the Table 2 translator ``row`` with ``overrides`` of its model's settings."""

    row: str
    overrides: Overrides = ()

    @property
    def model(self) -> str:
        return ABLATION_ROWS[self.row][0]

    @property
    def name(self) -> str:
        """The view's name in translations and nnUNet case names: ``qs_attn``, ``tanq--decoder_norm-in``."""
        return self.row + _suffix(self.overrides)


@dataclass(frozen=True)
class StudyRow:
    """One row of the study's table: a Table 2 or reference row (``base``), with a grid point's ``overrides``."""

    base: str
    overrides: Overrides = ()

    @property
    def name(self) -> str:
        """Folder and record name: ``tanq``, ``tanq--decoder_norm-in``, ``source-only``."""
        return self.base + _suffix(self.overrides)

    @property
    def title(self) -> str:
        """Its name in the table: the paper's (``Ours``), then the overrides (``Ours [decoder_norm=in]``)."""
        title = PAPER_NAMES.get(self.base, self.base)
        if self.overrides:
            title += " [" + ", ".join(f"{_field(key)}={_shown(value)}" for key, value in self.overrides) + "]"
        return title

    @property
    def translators(self) -> tuple[Translator, ...]:
        """The views its nnUNet trains on (none for a reference row); each takes the overrides of its own model."""
        return tuple(Translator(view, self._of_model(ABLATION_ROWS[view][0])) for view in SEGMENTATION_ROWS.get(self.base, ()))

    def _of_model(self, model: str) -> Overrides:
        return tuple((key, value) for key, value in self.overrides if _model(key) == model)


def _frozen(value: Any) -> Any:
    """A grid value made hashable (lists become tuples), so rows and translators can be dict keys."""
    return tuple(_frozen(item) for item in value) if isinstance(value, (list, tuple)) else value


def grid_points(grid: dict[str, list[Any]]) -> list[Overrides]:
    """Every combination of the grid's values, in the grid's order."""
    if not grid:
        return []
    return [tuple((key, _frozen(value)) for key, value in zip(grid, values)) for values in itertools.product(*grid.values())]


def study_rows(config: Config) -> list[StudyRow]:
    """``study.rows`` in order, each Table 2 row followed by its grid variants (module docstring)."""
    points = grid_points(config.study.grid)
    rows: list[StudyRow] = []
    for base in config.study.rows:
        rows.append(StudyRow(base))
        models = {translator.model for translator in StudyRow(base).translators}
        variants = [tuple((key, value) for key, value in point if _model(key) in models) for point in points]
        rows += [StudyRow(base, point) for point in dict.fromkeys(variants) if point]
    names = [row.name for row in rows]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ConfigError(f"study.grid: values that differ only in characters a folder name cannot hold give rows the same name: {clashes}")
    return rows


def studied_translators(rows: list[StudyRow]) -> list[Translator]:
    """Every translator the rows train on, once, in Table 2's order and then the grid's."""
    unique = list(dict.fromkeys(translator for row in rows for translator in row.translators))
    return sorted(unique, key=lambda t: list(ABLATION_ROWS).index(t.row))
