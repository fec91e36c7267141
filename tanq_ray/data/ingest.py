"""The ingest stage: a CrossMoDA folder -> per-domain Parquet slice shards + manifest.

Each volume (a ceT1 with its label, or an hrT2) is one Ray task. Results:
``<out>/ceT1/*.parquet``, ``<out>/hrT2/*.parquet``, ``<out>/volumes/<key>.json``
per finished volume and ``<out>/manifest.json`` for the whole cohort.

What stops the run and what skips a volume
------------------------------------------
*Stops, before any work* (the input is not what the user thinks it is):
a missing or empty folder, a file name outside the layout, a ceT1 without
its label or a label without its ceT1 (:class:`~tanq_ray.data.layout.LayoutError`).

*Skips the volume, with a warning, a ``skipped`` entry in the manifest and the
``volumes_skipped`` metric* (one bad scan must not sink a cohort of hundreds):
an unreadable/truncated file, a non-3-D image, a label whose shape or affine
differs from its image, label values outside {0, 1, 2}, NaN/inf voxels
(:class:`~tanq_ray.data.volume.BadVolumeError`). With
``ingest.on_bad_volume=stop`` the first such volume stops the run instead.
A skipped volume writes no shard. If every volume of a domain is skipped the
run stops: training would have nothing to read.

Resuming: a volume whose record exists with the same fingerprint (ingest
settings + source file size and mtime) is not redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tanq_ray.config import IngestConfig
from tanq_ray.data.geometry import volume_to_slices
from tanq_ray.data.layout import VolumeFiles, scan_folder
from tanq_ray.data.roi import ROI_SETTINGS, plan_roi
from tanq_ray.data.shards import Manifest, SkippedVolume, VolumeRecord, write_volume_shards
from tanq_ray.data.volume import BadVolumeError, check_pair, load_volume
from tanq_ray.io_utils import write_text_atomic
from tanq_ray import progress_board

log = logging.getLogger(__name__)

OUTPUT_SETTINGS = (*ROI_SETTINGS, "shard_rows")


class IngestError(RuntimeError):
    """The ingest stage cannot produce usable shards."""


@dataclass(frozen=True)
class IngestResult:
    """The manifest plus what this invocation did (for metrics)."""

    manifest: Manifest
    processed: int
    processed_slices: int
    reused: int
    seconds: float


def fingerprint(files: VolumeFiles, settings: IngestConfig) -> str:
    """Hash of everything that determines a volume's shards: output settings and source files."""
    parts: dict[str, Any] = {name: getattr(settings, name) for name in OUTPUT_SETTINGS}
    for path in (files.image, files.label):
        if path is not None:
            stat = path.stat()
            parts[str(path.name)] = (stat.st_size, stat.st_mtime_ns)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=list).encode()).hexdigest()[:16]


def ingest_volume(files: VolumeFiles, settings: IngestConfig, root: Path) -> VolumeRecord:
    """Read, validate, resample, slice and write one volume; raises BadVolumeError on bad input."""
    start = time.perf_counter()
    volume = load_volume(files.image, target_spacing=settings.spacing)
    label_volume = None if files.label is None else load_volume(files.label, is_label=True, target_spacing=settings.spacing)
    if label_volume is not None:
        check_pair(volume, label_volume, files.image, files.label)  # type: ignore[arg-type]
    geometry = plan_roi(volume, settings)
    images = volume_to_slices(volume.data, geometry, is_label=False)
    labels = None if label_volume is None else volume_to_slices(label_volume.data, geometry, is_label=True)
    shards = write_volume_shards(
        root, files.key, files.case_id, files.site, files.domain, images, labels, settings.shard_rows
    )
    record = VolumeRecord(
        key=files.key,
        case_id=files.case_id,
        site=files.site,
        domain=files.domain,
        image_file=str(files.image),
        label_file=None if files.label is None else str(files.label),
        n_slices=geometry.n_slices,
        shards=tuple(shards),
        geometry=geometry,
        fingerprint=fingerprint(files, settings),
        seconds=time.perf_counter() - start,
    )
    write_text_atomic(_record_path(root, files.key), json.dumps(record.to_dict()))
    return record


def _record_path(root: Path, key: str) -> Path:
    return root / "volumes" / f"{key}.json"


def _finished_record(files: VolumeFiles, settings: IngestConfig, root: Path) -> VolumeRecord | None:
    """The record of an earlier run for this volume, if it is complete and still up to date."""
    path = _record_path(root, files.key)
    if not path.is_file():
        return None
    try:
        record = VolumeRecord.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None
    if record.fingerprint != fingerprint(files, settings):
        return None
    if not all((root / shard).is_file() for shard in record.shards):
        return None
    return record


def _ingest_task(files: VolumeFiles, settings: IngestConfig, root: str) -> VolumeRecord | SkippedVolume:
    """Ray task body: a record, or the skip reason (returned, not raised, so the driver decides).

    Any failure of one volume is a skip with its reason, whatever its type: a
    volume that breaks a reader in a way no check foresaw must not stop the others.
    """
    try:
        return ingest_volume(files, settings, Path(root))
    except BadVolumeError as err:
        return SkippedVolume(key=files.key, file=str(err.path), reason=err.reason)
    except Exception as err:  # noqa: BLE001 - reported as the skip's reason
        return SkippedVolume(key=files.key, file=str(files.image), reason=f"{type(err).__name__}: {err}")


def run_ingest(train_dir: str | Path, out_dir: str | Path, settings: IngestConfig, *, progress: bool = True) -> IngestResult:
    """Ingest every volume of ``train_dir`` into ``out_dir`` using Ray tasks; resumable."""
    import ray
    from tqdm import tqdm

    start = time.perf_counter()
    root = Path(out_dir)
    volumes = scan_folder(train_dir)  # layout errors stop here, before any work
    root.mkdir(parents=True, exist_ok=True)

    finished: dict[str, VolumeRecord] = {}
    pending: list[VolumeFiles] = []
    for files in volumes:
        record = _finished_record(files, settings, root)
        if record is None:
            pending.append(files)
        else:
            finished[files.key] = record
    if not ray.is_initialized():
        ray.init()
    task = ray.remote(_ingest_task).options(num_cpus=1, max_retries=1)
    limit = settings.max_parallel or max(1, int(ray.cluster_resources().get("CPU", 1)))
    skipped: list[SkippedVolume] = []
    processed_slices = 0
    in_flight: list[Any] = []
    queue = list(pending)
    finished_count = len(finished)  # the bar's own count stays 0 when it is disabled
    with tqdm(total=len(volumes), initial=finished_count, desc="ingest", unit="vol", disable=not progress) as bar:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                in_flight.append(task.remote(queue.pop(0), settings, str(root)))
            done, in_flight = ray.wait(in_flight, num_returns=1)
            outcome = ray.get(done[0])
            bar.update(1)
            finished_count += 1
            progress_board.post("ingest", f"{finished_count}/{len(volumes)} volumes")
            if isinstance(outcome, SkippedVolume):
                message = f"skipping volume '{outcome.key}': {outcome.file}: {outcome.reason}"
                if settings.on_bad_volume == "stop":
                    for ref in in_flight:
                        ray.cancel(ref)
                    raise IngestError(message + " (ingest.on_bad_volume=stop)")
                log.warning(message)
                skipped.append(outcome)
            else:
                finished[outcome.key] = outcome
                processed_slices += outcome.n_slices
    progress_board.clear("ingest")

    manifest = Manifest(
        root=root,
        settings=settings.model_dump(mode="json"),
        volumes=[finished[v.key] for v in volumes if v.key in finished],
        skipped=skipped,
    )
    for domain in ("ceT1", "hrT2"):
        wanted = [v for v in volumes if v.domain == domain]
        if wanted and not any(v.domain == domain for v in manifest.volumes):
            raise IngestError(f"every {domain} volume in '{train_dir}' was skipped; see the warnings above")
    if not any(v.domain == "hrT2" for v in volumes):
        log.warning("'%s' has no hrT2 volume: translators need unlabelled target-domain images", train_dir)
    manifest.write()
    return IngestResult(
        manifest,
        processed=len(pending) - len(skipped),
        processed_slices=processed_slices,
        reused=len(volumes) - len(pending),
        seconds=time.perf_counter() - start,
    )
