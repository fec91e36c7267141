"""The CrossMoDA folder layout: which files make up which case.

A training folder holds ``<case>_ceT1.nii.gz`` with ``<case>_Label.nii.gz``
(labelled source domain) and ``<case>_hrT2.nii.gz`` (unlabelled target
domain). Case ids look like ``crossmoda2022_etz_12``; the middle token is the
site. Layout mistakes stop the run before any work (see :func:`scan_folder`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Domain = Literal["ceT1", "hrT2"]
SUFFIXES: dict[str, str] = {"ceT1": "_ceT1.nii.gz", "Label": "_Label.nii.gz", "hrT2": "_hrT2.nii.gz"}
_NAME = re.compile(r"^(?P<case>.+)_(?P<kind>ceT1|Label|hrT2)\.nii(\.gz)?$")


class LayoutError(ValueError):
    """The folder does not follow the CrossMoDA layout; the message names the files."""


@dataclass(frozen=True)
class VolumeFiles:
    """One volume to ingest: a ceT1 with its label, or an unlabelled hrT2."""

    case_id: str
    domain: Domain
    image: Path
    label: Path | None = None

    @property
    def site(self) -> str:
        return site_of(self.case_id)

    @property
    def key(self) -> str:
        """Unique name of this volume in a cohort, e.g. ``crossmoda2022_etz_12_ceT1``."""
        return f"{self.case_id}_{self.domain}"


def site_of(case_id: str) -> str:
    """``crossmoda2022_etz_12`` -> ``etz``; ids without three tokens have site ``unknown``."""
    parts = case_id.split("_")
    return parts[-2] if len(parts) >= 3 else "unknown"


def scan_folder(folder: str | Path) -> list[VolumeFiles]:
    """List the volumes of a CrossMoDA training folder, sorted by case then domain.

    Raises :class:`LayoutError` when the folder is missing or holds no volume,
    when a file name is not ``<case>_{ceT1,Label,hrT2}.nii[.gz]`` (a misnamed
    file would otherwise be silently dropped), or when a ceT1 has no label or a
    label has no ceT1.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LayoutError(f"data folder '{folder}' does not exist or is not a directory")
    found: dict[tuple[str, str], Path] = {}
    unknown: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        match = _NAME.match(path.name)
        if match is None:
            unknown.append(path.name)
            continue
        found[(match["case"], match["kind"])] = path
    if unknown:
        raise LayoutError(
            f"'{folder}' holds files that are not <case>_ceT1/_Label/_hrT2.nii.gz: {unknown[:10]}"
            + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            + "; rename or move them"
        )
    if not found:
        raise LayoutError(f"data folder '{folder}' holds no <case>_ceT1.nii.gz or <case>_hrT2.nii.gz volume")

    volumes: list[VolumeFiles] = []
    problems: list[str] = []
    for case_id in sorted({case for case, _ in found}):
        image, label = found.get((case_id, "ceT1")), found.get((case_id, "Label"))
        if image is not None and label is None:
            problems.append(f"'{image.name}' has no label: expected '{case_id}{SUFFIXES['Label']}'")
        elif label is not None and image is None:
            problems.append(f"'{label.name}' has no image: expected '{case_id}{SUFFIXES['ceT1']}'")
        elif image is not None:
            volumes.append(VolumeFiles(case_id, "ceT1", image, label))
        if (case_id, "hrT2") in found:
            volumes.append(VolumeFiles(case_id, "hrT2", found[(case_id, "hrT2")]))
    if problems:
        raise LayoutError(f"in '{folder}': " + "; ".join(problems))
    return volumes
