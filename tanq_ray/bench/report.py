"""One measured figure per row, printed as a table and written as JSON."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from tanq_ray.io_utils import write_text_atomic


@dataclass(frozen=True)
class Figure:
    """A measured value, optionally set against an anchor measured or quoted in the same run."""

    name: str
    value: float
    unit: str
    anchor_name: str = ""
    anchor_value: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """value / anchor_value, when there is an anchor."""
        if self.anchor_value in (None, 0):
            return None
        return self.value / self.anchor_value


def machine() -> dict[str, str | int]:
    """What the figures were measured on."""
    import os

    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def format_table(title: str, figures: Sequence[Figure]) -> str:
    """A markdown table: figure | value | unit | anchor | ratio | note."""
    lines = [f"## {title}", "", "| figure | value | unit | anchor | ratio | note |", "|---|---:|---|---|---:|---|"]
    for f in figures:
        anchor = f"{f.anchor_name} = {f.anchor_value:.4g}" if f.anchor_value is not None else ""
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
        lines.append(f"| {f.name} | {f.value:.4g} | {f.unit} | {anchor} | {ratio} | {f.note} |")
    return "\n".join(lines)


def publish(title: str, figures: Sequence[Figure], json_path: str | Path | None) -> str:
    """Print the table and, when ``json_path`` is given, write figures + machine as JSON."""
    table = format_table(title, figures)
    print(table, flush=True)
    if json_path is not None:
        payload = {"title": title, "machine": machine(), "figures": [asdict(f) | {"ratio": f.ratio} for f in figures]}
        write_text_atomic(json_path, json.dumps(payload, indent=2))
    return table
