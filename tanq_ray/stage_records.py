"""What each stage left in ``output_dir``: one record per stage, and the only licence to delete.

``<output_dir>/pipeline/<stage>.json`` holds the stage's key
(:mod:`tanq_ray.stage_keys`), its state and, once done, its outputs. The
pipeline and the single-stage commands (``tanq ingest``, ``tanq train``)
write the same records, so the pipeline adopts what a command finished with
the same settings instead of redoing it.

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


def record_path(config: Config, name: str) -> Path:
    return config.stage_dir(RECORDS_FOLDER) / f"{name}.json"


def read_record(config: Config, name: str) -> dict[str, Any] | None:
    path = record_path(config, name)
    return json.loads(path.read_text()) if path.is_file() else None


def finished_outputs(config: Config, name: str, key: str) -> dict[str, Any] | None:
    """The outputs of stage ``name`` when its record says it finished with ``key``."""
    record = read_record(config, name)
    return record["outputs"] if record is not None and record.get("key") == key and "outputs" in record else None


def start(config: Config, name: str, key: str, work_dirs: Sequence[Path] = ()) -> None:
    """Record that stage ``name`` starts with ``key``, after clearing or moving aside its ``work_dirs`` (module docstring)."""
    record = read_record(config, name)
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
    write_text_atomic(record_path(config, name), json.dumps({"key": key, "state": "running"}))


def finish(config: Config, name: str, key: str, outputs: dict[str, Any], seconds: float) -> None:
    """Record that stage ``name`` finished with ``key`` and these JSON-ready ``outputs``."""
    record = {"key": key, "state": "done", "outputs": outputs, "seconds": seconds}
    write_text_atomic(record_path(config, name), json.dumps(record, indent=1, default=str))
