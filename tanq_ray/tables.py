"""Result tables as Markdown (for the terminal and MLflow) and CSV (for spreadsheets).

A table is a list of rows, each a mapping from column name to value; the
column order is given once. Floats are printed with a fixed number of
significant digits in Markdown and in full in CSV; ``None`` and NaN print as
an empty cell in CSV and as ``-`` in Markdown.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tanq_ray.io_utils import write_text_atomic


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _markdown_cell(value: Any, digits: int) -> str:
    if _is_missing(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value).replace("|", "\\|")


@dataclass(frozen=True)
class Table:
    """Rows of named values with a fixed column order."""

    columns: Sequence[str]
    rows: Sequence[Mapping[str, Any]]

    def markdown(self, digits: int = 4) -> str:
        """GitHub-flavoured Markdown; numeric columns right-aligned."""
        numeric = [all(isinstance(row.get(c), (int, float)) or _is_missing(row.get(c)) for row in self.rows) for c in self.columns]
        lines = [
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---:" if is_number else "---" for is_number in numeric) + "|",
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(_markdown_cell(row.get(c), digits) for c in self.columns) + " |")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """CSV with a header line; missing values are empty cells."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if _is_missing(row.get(c)) else row.get(c) for c in self.columns])
        return buffer.getvalue()

    def write(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.md`` and ``<stem>.csv`` atomically; return both paths."""
        stem = Path(stem)
        markdown = write_text_atomic(stem.with_name(stem.name + ".md"), self.markdown())
        comma_separated = write_text_atomic(stem.with_name(stem.name + ".csv"), self.csv())
        return markdown, comma_separated
