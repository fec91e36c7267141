"""The translate stage: labelled ceT1 volumes -> pseudo-hrT2 volumes, one folder per translator (view).

PAPER.md §3, step 1 (multi-view segmentation): every ceT1 volume is
translated by TANQ and by CycleGAN; both pseudo-hrT2 volumes keep the ceT1
label, so each source case gives two training cases for nnUNet::

    <out_dir>/<view>/<case>_hrT2.nii.gz    pseudo-hrT2 ROI volume (see tanq_ray.data.roi)
    <out_dir>/<view>/<case>_Label.nii.gz   the ceT1 label cut to the same ROI
    <out_dir>/<view>/translated.json       generator fingerprint and the cases finished with it

Each pseudo-hrT2 is written as its region of interest (the ingest crop the
translator saw, placed in the scanner's world by its affine), not pasted into
a full-size volume of zeros: the segmenter trains and predicts on that same
region for every volume, so it never learns a field of view or an intensity
normalisation it will not meet on real hrT2.

How the work is laid out
------------------------
The ceT1 slices of the ingest shards stream through ``map_batches`` on a fixed
pool of :class:`SliceTranslator` actors; each actor loads its generator once
(``weights_only``) and holds one GPU when the cluster has GPUs, one CPU
otherwise. TANQ's target-aware norms need the ceT1 label mask (paper eq. 1-7),
so the labels travel with the images; CycleGAN ignores them.

Reassembly collects the translated slices per case on the driver instead of
``groupby("case_id").map_groups``: a group-by is an all-to-all exchange, so no
case could be written before every slice of the view was translated (an
interrupted run would keep nothing) and every slice would cross the object
store once more. With ``preserve_order`` the slices come back in manifest
order, case after case, so the driver holds one unfinished case at a time
(150 slices of 256 x 256 float16 are about 20 MB). Each finished case goes to a
Ray task that maps it back onto the original grid and writes it, so volumes
are written in parallel while translation continues.

Resuming: a case enters ``translated.json`` as soon as its files exist. A
rerun skips each case listed there with the same generator (sha256 of the
file) and the same ingested volume (its manifest fingerprint) whose files are
present; another generator file redoes its whole view.

Ray does not restart a lost translator actor (``max_restarts=0``; Ray Data's
default is to restart it forever): Ray cannot promise such a restart when
the actor's constructor arguments live in its object store, as those of Ray Data's
map actors always do, and says so with an error line on the console of every
run (ray-project/ray issues 53727 and 57733). A lost actor therefore fails the
stage, and running the same command again resumes it from the last written case.

Translated slices cross Ray as float16, like the shards (error <= 5e-4 of the
[-1, 1] range, half the bytes of float32).

On CPU one core is left free: a fixed actor pool holding every CPU starves the
shard-reading tasks and the dataset never starts.

Intensities
-----------
The generator's [-1, 1] output is mapped linearly to 0 to 1000, as every ROI
image is (:func:`tanq_ray.data.roi.roi_intensities`); nnUNet z-scores every
MR volume on its own, so only a fixed positive scale, the same for every
case and view, matters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import torch

from tanq_ray.data.geometry import SliceGeometry, volume_to_slices
from tanq_ray.data.roi import ROI_INTENSITY_RANGE, roi_image, save_nifti
from tanq_ray.data.volume import load_volume
from tanq_ray.data.readers import SliceCollate, read_domain
from tanq_ray.data.shards import Manifest, VolumeRecord, decode_tensors, encode_tensors
from tanq_ray.io_utils import write_text_atomic
from tanq_ray.train.export import load_translator

log = logging.getLogger(__name__)

RECORD_FILE = "translated.json"
RECORD_VERSION = 2
INPUT_COLUMNS = ["case_id", "slice_index", "image", "label"]
VIEW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
HASH_CHUNK = 1 << 20


class TranslateError(ValueError):
    """The translation cannot run on these inputs; the message names the file or setting."""


@dataclass(frozen=True)
class TranslatedCase:
    """One pseudo-hrT2 training case."""

    case_id: str
    """Source ceT1 case id."""
    view: str
    """Translator name, e.g. ``tanq`` or ``cyclegan``."""
    image: Path
    """Pseudo-hrT2 NIfTI on the source ceT1's original grid and affine."""
    label: Path
    """The source ceT1 label, copied unchanged."""

    def to_json(self) -> dict[str, str]:
        """As a stage record holds it."""
        return {"case_id": self.case_id, "view": self.view, "image": str(self.image), "label": str(self.label)}

    @classmethod
    def from_json(cls, record: dict[str, str]) -> "TranslatedCase":
        return cls(record["case_id"], record["view"], Path(record["image"]), Path(record["label"]))


@dataclass(frozen=True)
class TranslateResult:
    """Every case of every view, and what this call did (for throughput figures)."""

    cases: list[TranslatedCase]
    slices: int
    """Slices translated by this call."""
    volumes: int
    """Volumes written by this call."""
    seconds: float
    reused: int
    """(view, case) pairs already done with the same generator, not redone."""


@dataclass(frozen=True)
class WorkerPlan:
    """How many translator actors, on which device, with which Ray resources each."""

    actors: int
    device: str
    resources: dict[str, float]


class SliceTranslator:
    """Ray Data actor: a batch of ceT1 shard rows -> the same rows with the translated ``image``.

    Input: an Arrow batch with ``case_id``, ``slice_index``, ``image`` and
    ``label`` (raw ``(H, W)`` tensors, see :mod:`tanq_ray.data.shards`). Output:
    ``case_id``, ``slice_index`` and ``image`` = pseudo-hrT2 ``(H, W)`` float16 in [-1, 1].
    """

    def __init__(self, generator: str, image_size: int, device: str) -> None:
        self.model = load_translator(generator, device)  # once per actor
        self.collate = SliceCollate(image_size)
        self.shape = (image_size, image_size)

    def __call__(self, batch: pa.Table) -> pa.Table:
        tensors = self.collate(batch)  # image (B, 1, H, W) float32, label (B, H, W) int64
        with torch.inference_mode():
            translated = self.model.translate(tensors["image"], tensors["label"])
        slices = translated[:, 0].float().cpu().numpy()
        return pa.table(
            {
                "case_id": batch.column("case_id"),
                "slice_index": batch.column("slice_index"),
                "image": encode_tensors(slices, "image", len(slices), self.shape),
            }
        )


class CaseCollector:
    """Gathers translated rows per case; a case is complete once it holds each slice ``0 .. n-1``."""

    def __init__(self, volumes: list[VolumeRecord], image_size: int, source: Path) -> None:
        self.expected = {v.case_id: v.n_slices for v in volumes}
        self.shape = (image_size, image_size)
        self.source = source
        self.parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, block: pa.Table) -> list[tuple[str, np.ndarray]]:
        """Take one block of translated rows; return the cases it completes as ``(case_id, (Z, H, W) float16)``."""
        case_ids = np.asarray(block.column("case_id").to_pylist(), dtype=object)
        indices = block.column("slice_index").to_numpy()
        images = decode_tensors(block.column("image"), "image", self.shape)
        finished = []
        for case_id in dict.fromkeys(case_ids):
            rows = case_ids == case_id
            parts = self.parts.setdefault(case_id, [])
            parts.append((indices[rows], images[rows]))
            if sum(len(i) for i, _ in parts) >= self.expected[case_id]:
                finished.append((case_id, self._assemble(case_id)))
        return finished

    def check_all_finished(self) -> None:
        """Raise for a case whose slices never all arrived."""
        for case_id, parts in self.parts.items():
            raise self._error(case_id, np.concatenate([i for i, _ in parts]))

    def _assemble(self, case_id: str) -> np.ndarray:
        indices = np.concatenate([i for i, _ in self.parts[case_id]])
        order = np.argsort(indices, kind="stable")
        if not np.array_equal(indices[order], np.arange(self.expected[case_id])):
            raise self._error(case_id, indices)
        images = np.concatenate([s for _, s in self.parts.pop(case_id)])
        return images[order]

    def _error(self, case_id: str, indices: np.ndarray) -> TranslateError:
        n = self.expected[case_id]
        values, counts = np.unique(indices, return_counts=True)
        missing, repeated = np.setdiff1d(np.arange(n), values).tolist(), values[counts > 1].tolist()
        problems = [f"{found[:10]} {what}" for found, what in ((missing, "missing"), (repeated, "repeated")) if found]
        return TranslateError(
            f"case '{case_id}' (slices 0..{n - 1}): {' and '.join(problems)} in the ceT1 shards under "
            f"'{self.source}'; run `tanq ingest` again"
        )


def output_paths(view_dir: Path, case_id: str) -> tuple[Path, Path]:
    """``(<case>_hrT2.nii.gz, <case>_Label.nii.gz)`` of one case in a view folder."""
    return view_dir / f"{case_id}_hrT2.nii.gz", view_dir / f"{case_id}_Label.nii.gz"


def write_case(slices: np.ndarray, geometry: SliceGeometry, label_file: str, view_dir: str, case_id: str) -> str:
    """Ray task body: ``(Z, S, S)`` translated slices -> pseudo-hrT2 ROI volume, and the ceT1 label cut to the same ROI."""
    image_path, label_path = output_paths(Path(view_dir), case_id)
    label = volume_to_slices(load_volume(label_file, is_label=True).data, geometry, is_label=True)
    save_nifti(roi_image(slices.astype(np.float32), geometry, is_label=False), image_path)
    save_nifti(roi_image(label, geometry, is_label=True), label_path)
    return case_id


def generator_fingerprint(path: Path) -> dict[str, Any]:
    """sha256 and size of a generator file: what decides whether a view must be redone."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def check_generator(path: Path, view: str, image_size: int) -> None:
    """Refuse a missing file, a file that is no generator export, or one made for other slice sizes.

    An export that records ``image_size`` must match the manifest's; every
    generator must map a ``(1, 1, S, S)`` slice to the same shape.
    """
    if not path.is_file():
        raise TranslateError(f"generator for view '{view}' not found: '{path}' (train it with `tanq train`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        model = load_translator(path, "cpu")
    except (RuntimeError, ValueError, pickle.UnpicklingError) as err:
        raise TranslateError(f"generator for view '{view}': '{path}' is no readable generator export ({err})") from err
    trained_size = payload.get("image_size")
    if trained_size is not None and int(trained_size) != image_size:
        raise TranslateError(
            f"generator '{path}' (view '{view}') was trained on {trained_size} x {trained_size} slices "
            f"but the ingest manifest has image_size {image_size}; ingest with ingest.image_size={trained_size} "
            "or train on these shards"
        )
    cannot = f"generator '{path}' (view '{view}') cannot translate the manifest's {image_size} x {image_size} slices"
    try:
        probe = model.translate(torch.zeros(1, 1, image_size, image_size))
    except ValueError as err:
        raise TranslateError(f"{cannot}: {err}") from err
    if tuple(probe.shape) != (1, 1, image_size, image_size):
        raise TranslateError(f"{cannot}: it returns {tuple(probe.shape[-2:])}")


def plan_workers(actors: int | None, use_gpu: bool | None) -> WorkerPlan:
    """Actor count and resources from the cluster: one GPU per actor when there are GPUs, else one CPU."""
    import ray

    total = ray.cluster_resources()
    gpus, cpus = total.get("GPU", 0.0), total.get("CPU", 0.0)
    if actors is not None and actors < 1:
        raise TranslateError(f"actors must be >= 1, got {actors}")
    if use_gpu is None:
        use_gpu = gpus >= 1
    if use_gpu:
        wanted = actors or max(1, int(gpus))
        if wanted > gpus:
            raise TranslateError(f"{wanted} GPU translator actor(s) requested but the cluster has {gpus:g} GPUs")
        return WorkerPlan(wanted, "cuda", {"num_gpus": 1.0})
    spare = int(cpus) - 1  # one CPU stays free to read shards and write volumes
    wanted = actors or max(1, spare)
    if wanted > spare:
        raise TranslateError(
            f"{wanted} CPU translator actor(s) need {wanted + 1} CPUs (one each plus one to read shards "
            f"and write volumes) but the cluster has {cpus:g}"
        )
    return WorkerPlan(wanted, "cpu", {"num_cpus": 1.0})


@dataclass
class ViewLedger:
    """``<view>/translated.json``: the generator's fingerprint and the cases finished with it."""

    folder: Path
    generator: Path
    fingerprint: dict[str, Any]
    image_size: int
    cases: dict[str, dict[str, str]]

    @classmethod
    def resume(cls, folder: Path, generator: Path, image_size: int, volumes: list[VolumeRecord]) -> "ViewLedger":
        """The ledger of an earlier run, keeping only cases still valid (same generator, same ingested
        volume, both files present); a fresh one when the generator changed."""
        ledger = cls(folder, generator, generator_fingerprint(generator), image_size, {})
        path = folder / RECORD_FILE
        try:
            earlier = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            earlier = {}
        same = earlier.get("version") == RECORD_VERSION and earlier.get("image_size") == image_size
        if same and earlier.get("generator", {}).get("sha256") == ledger.fingerprint["sha256"]:
            done = earlier.get("cases", {})
            for volume in volumes:
                entry = done.get(volume.case_id, {})
                if entry.get("ingest_fingerprint") == volume.fingerprint and all(
                    p.is_file() for p in output_paths(folder, volume.case_id)
                ):
                    ledger.cases[volume.case_id] = entry
        return ledger

    def add(self, volume: VolumeRecord) -> None:
        """Record ``volume`` as translated (its files exist) and rewrite the ledger."""
        image, label = output_paths(self.folder, volume.case_id)
        entry = {"ingest_fingerprint": volume.fingerprint, "image": image.name, "label": label.name}
        self.cases[volume.case_id] = entry
        self.write()

    def write(self) -> None:
        payload = {
            "version": RECORD_VERSION,
            "generator": {"file": str(self.generator)} | self.fingerprint,
            "image_size": self.image_size,
            "intensity_range": list(ROI_INTENSITY_RANGE),
            "cases": self.cases,
        }
        write_text_atomic(self.folder / RECORD_FILE, json.dumps(payload, indent=1))


def _source_volumes(manifest: Manifest) -> list[VolumeRecord]:
    volumes = [v for v in manifest.volumes if v.domain == "ceT1"]
    if not volumes:
        raise TranslateError(f"the ingest manifest at '{manifest.root}' lists no ceT1 volume to translate")
    for volume in volumes:
        if volume.label_file is None or not Path(volume.label_file).is_file():
            raise TranslateError(
                f"ceT1 case '{volume.case_id}' in '{manifest.root}' has no label file (expected '{volume.label_file}')"
            )
    return volumes


def _translate_view(
    manifest: Manifest, pending: list[VolumeRecord], ledger: ViewLedger, plan: WorkerPlan, batch_size: int
) -> None:
    """Translate the ``pending`` ceT1 volumes with the ledger's generator; each case enters the ledger once written."""
    import ray
    from ray.data import ActorPoolStrategy

    image_size = int(manifest.settings["image_size"])
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for max_restarts; its only way in, **ray_remote_args, warns of its removal in 2.64
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
        dataset = read_domain(replace(manifest, volumes=pending), "ceT1", columns=INPUT_COLUMNS).map_batches(
            SliceTranslator,
            fn_constructor_kwargs={"generator": str(ledger.generator), "image_size": image_size, "device": plan.device},
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=plan.actors),
            max_restarts=0,  # a lost actor fails the stage, which resumes case by case (module docstring)
            **plan.resources,
        )
    dataset.context.execution_options.preserve_order = True  # case after case: one unfinished case in memory
    writer = ray.remote(write_case).options(num_cpus=1)
    records = {v.case_id: v for v in pending}
    collector = CaseCollector(pending, image_size, manifest.root)
    writing: list[Any] = []

    def record_written(timeout: float | None) -> None:
        nonlocal writing
        if writing:
            written, writing = ray.wait(writing, num_returns=len(writing), timeout=timeout)
            for case_id in ray.get(written):
                ledger.add(records[case_id])

    for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for case_id, slices in collector.add(block):
            record = records[case_id]
            writing.append(writer.remote(slices, record.geometry, record.label_file, str(ledger.folder), case_id))
        record_written(timeout=0)
    collector.check_all_finished()
    record_written(timeout=None)


def translate_cohort(
    ingest_dir: Path,
    generators: Mapping[str, Path],
    out_dir: Path,
    *,
    batch_size: int = 16,
    actors: int | None = None,
    use_gpu: bool | None = None,
) -> TranslateResult:
    """Translate every ingested ceT1 volume with each generator (``view name -> generator.pt``); resumable.

    ``actors``: translator actors per view (default: one per GPU, or all CPUs
    but one); ``use_gpu``: ``None`` = use GPUs when the cluster has any.
    """
    import ray

    start = time.perf_counter()
    manifest = Manifest.read(ingest_dir)
    volumes = _source_volumes(manifest)
    image_size = int(manifest.settings["image_size"])
    if not generators:
        raise TranslateError("no generator given: pass at least one view, e.g. {'tanq': <train>/tanq/generator.pt}")
    if batch_size < 1:
        raise TranslateError(f"batch_size must be >= 1, got {batch_size}")
    for view, generator in generators.items():
        if not VIEW_NAME.match(view):
            raise TranslateError(f"view name '{view}' must be letters, digits, '_', '.' or '-' (it names a folder)")
        check_generator(Path(generator), view, image_size)
    if not ray.is_initialized():
        ray.init()
    plan = plan_workers(actors, use_gpu)

    cases: list[TranslatedCase] = []
    slices = written = reused = 0
    for view, generator in generators.items():
        ledger = ViewLedger.resume(Path(out_dir) / view, Path(generator), image_size, volumes)
        ledger.write()  # drops cases of an earlier generator at once
        reused += len(ledger.cases)
        pending = [v for v in volumes if v.case_id not in ledger.cases]
        if pending:
            log.info("translate %s: %d of %d ceT1 volumes with '%s'", view, len(pending), len(volumes), generator)
            _translate_view(manifest, pending, ledger, plan, batch_size)
            slices += sum(v.n_slices for v in pending)
            written += len(pending)
        cases += [TranslatedCase(v.case_id, view, *output_paths(ledger.folder, v.case_id)) for v in volumes]
    seconds = time.perf_counter() - start
    return TranslateResult(cases=cases, slices=slices, volumes=written, seconds=seconds, reused=reused)
