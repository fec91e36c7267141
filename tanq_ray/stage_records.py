"""What each stage left in ``output_dir``: one record per stage, and the only licence to delete.

``<records>/<stage>.json`` (``<output_dir>/pipeline/`` for the recipe's
stages, a study's own folder for its stages) holds the stage's key
(:mod:`tanq_ray.stage_keys`), its state and, once done, its outputs. The
pipeline and the single-stage commands (``tanq ingest``, ``tanq train``)
are the same runner (:mod:`tanq_ray.runner`) and write the same records, so
the pipeline adopts what a command finished with the same settings instead
of redoing it.

Before a stage runs, its work folders are handled by what the record says:

- a record of this key (an interrupted run): kept, so the stage resumes;
- a record of another key: emptied, since we wrote them for other settings;
- no record: the folders are not ours to judge (a run of an older version,
  files a user put there), so they are moved aside to
  ``<folder>.unrecorded-<time>`` with a warning, never deleted.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from tanq_ray.config import Config
from tanq_ray.io_utils import write_text_atomic

log = logging.getLogger(__name__)

RECORDS_FOLDER = "pipeline"
"""Under ``output_dir``: the records of the recipe's stages."""


def records_dir(config: Config) -> Path:
    return config.stage_dir(RECORDS_FOLDER)


def record_path(records: Path, name: str) -> Path:
    return records / f"{name}.json"


def read_record(records: Path, name: str) -> dict[str, Any] | None:
    path = record_path(records, name)
    return json.loads(path.read_text()) if path.is_file() else None


def finished_outputs(records: Path, name: str, key: str) -> dict[str, Any] | None:
    """The outputs of stage ``name`` when its record in ``records`` says it finished with ``key``."""
    record = read_record(records, name)
    return record["outputs"] if record is not None and record.get("key") == key and "outputs" in record else None


def start(records: Path, name: str, key: str, work_dirs: Sequence[Path] = ()) -> None:
    """Record that stage ``name`` starts with ``key``, after clearing or moving aside its ``work_dirs`` (module docstring)."""
    record = read_record(records, name)
    for folder in work_dirs:
        if not folder.exists() or (record is not None and record.get("key") == key):
            continue
        if record is not None:
            log.info("stage %s: settings changed, clearing %s", name, folder)
            shutil.rmtree(folder)
        elif any(folder.iterdir()):
            aside = folder.with_name(f"{folder.name}.unrecorded-{time.strftime('%Y%m%d-%H%M%S')}")
            log.warning("stage %s: '%s' holds files no record of ours names; moved to '%s', nothing deleted", name, folder, aside)
            folder.rename(aside)
    write_text_atomic(record_path(records, name), json.dumps({"key": key, "state": "running"}))


def finish(records: Path, name: str, key: str, outputs: dict[str, Any], seconds: float) -> None:
    """Record that stage ``name`` finished with ``key`` and these JSON-ready ``outputs``."""
    record = {"key": key, "state": "done", "outputs": outputs, "seconds": seconds}
    write_text_atomic(record_path(records, name), json.dumps(record, indent=1, default=str))
