"""Phantom cohort: synthetic CrossMoDA-like ceT1 / hrT2 volumes with VS and cochlea labels.

``generate_cohort(out)`` writes a cohort with the CrossMoDA layout so the whole recipe
runs (and is scored) without real data::

    <out>/train/<case>_ceT1.nii.gz + <case>_Label.nii.gz   `cases` labelled subjects
    <out>/train/<case>_hrT2.nii.gz                          `cases` other, unlabelled subjects
    <out>/train_hrT2_labels/<case>_Label.nii.gz             their truth, read only by the target-supervised row
    <out>/eval/<case>_hrT2.nii.gz                           `eval_cases` further subjects
    <out>/eval_labels/<case>_Label.nii.gz                   their truth (training never reads it)
    <out>/cohort.json                                       case lists, sites, per-case acquisition

Case ids are ``crossmoda2022_<site>_<n>``, ``n`` unique over the cohort (labelled, then
unlabelled, then evaluation subjects), sites alternating ldn, etz within each group.
Every subject is imaged once (unpaired domains). Labels: 0 background, 1 VS, 2 cochlea.

Generative model
----------------
Anatomy (:mod:`tanq_ray.data.phantom_anatomy`): a head built from smooth signed
distance fields in mm, 150 (141-159) mm wide and 186 (173-197) mm long: skin, scalp
fat, temporalis, skull with diploe, cranial cavity with CSF, cerebrum (CSF rim, GM
ribbon 2.4-3.2 mm, undulating WM, GM-lined sulci from the zero set of a random
field, lateral/temporal/third ventricles), posterior fossa (cerebellar cortex with
folia, WM core, brainstem with middle cerebellar peduncles, 4th ventricle, basilar
artery, prepontine/cerebellopontine-angle cisterns, cisterna magna), tentorium and
falx, skull base, clivus, petrous bones (posterior face 40-50 deg to the coronal
plane), mastoid air cells, middle ears, external auditory canals, sigmoid sinuses,
orbits, sinuses. Each side: an IAC (CSF tube, radius 1.9-2.5 mm, flared porus
19-25 mm lateral of the midline, 8.3-12.7 mm long) with the VII/VIII nerves, a
vestibule and three semicircular canals, and a cochlea: a 2.4-2.75-turn tapering
spiral tube 6.5-8.4 mm across, centred 33-43 (mean 38) mm lateral of the midline, 3-6 mm
lateral and anterior of the IAC fundus.
One VS per subject on a random side: 30 % purely intracanalicular (4-10 mm plug of
the canal), otherwise an "ice-cream cone" (canal part + cisternal ellipsoid of
diameter 7-30 mm, log-uniform) with 0-2 lobules and surface lobulation; bone limits
it (except the canal, which it widens), large ones push the brain aside.

Tissue intensities (relative; multiplied per subject by U(0.94, 1.06) per tissue)::

    tissue      ceT1  hrT2       tissue      ceT1  hrT2
    air         0.00  0.00       cb_gm       0.42  0.38
    fat         0.82  0.48       vessel      0.80  0.06
    soft        0.30  0.16       dura        0.50  0.12
    bone        0.04  0.03       fluid       0.08  0.92
    marrow      0.62  0.30       vitreous    0.07  0.95
    csf         0.09  1.00       lens        0.25  0.10
    gm          0.40  0.36       nerve       0.46  0.22
    wm          0.57  0.25       vs          0.90  0.55
    brainstem   0.52  0.29

ceT1: enhancing VS and vessels bright, fat bright, WM > GM, CSF / cochlear fluid /
bone dark. hrT2 (CISS-like): CSF and labyrinthine fluid bright, VS hyperintense to brain
tissue and hypointense to CSF (heterogeneous, +-12 %; +-8 % in ceT1), WM < GM, bone and
flowing blood dark. (Radiology references describe VS as T2-hyperintense relative to
brain, e.g. the radasist.com atlas entry "Vestibular schwannoma"; version 2 of this
cohort rendered it iso to cerebellar cortex, 0.40.) Texture: all
tissue x (1 + 0.035 field), field = random cosines of 4-14 mm wavelength.

Sites (``size`` = in-plane matrix of the finest acquisition, s0 = 160 mm / size)::

    site (city)    orient  values            ceT1                         hrT2
    ldn (London)   RAS     x1000, integers   1.2 s0, z 1.0, 200x230x56 mm  1.0 s0, z 1.0, 160x176x44 mm
    etz (Tilburg)  LPS     x3000/x4000 float 1.28 s0, z 1.25, 210x236x66   1.15 s0, z 1.2, 170x187x44

(in-plane spacing, slice spacing, field of view x/y/z in mm). In-plane spacing scales
with 1/size, slice spacing does not: size=128 gives 1.25-1.6 mm in-plane (coarser than
z), size >= 256 finer than z as in the real scans. Grids are axis-aligned; LPS stores x and y flipped (negative affine
diagonal), so readers must reorient (nibabel ``as_closest_canonical``). The slab is
centred on the IACs, the field of view on the head.

Per subject: head pose (yaw +-5, pitch +-6, roll +-3 deg; shift +-4 mm), slab/FOV
offsets +-3 mm, all anatomical parameters above, tissue intensities, a smooth bias
field exp(b) with b a random quadratic polynomial of the scanner coordinates
(amplitude 0.12-0.25, per site and modality), Rician noise (sigma 1.8-3.5 % of the
CSF level, x U(0.8, 1.25)) and a global scale x U(0.9, 1.1). Images are float32,
labels uint8 rasterised from the same shapes on the image grid (voxel centre inside
the VS / cochlea); a structure too small to hit a voxel centre marks its nearest voxel.

Randomness: case ``(role, index)`` uses ``np.random.default_rng(SeedSequence([seed,
role, index]))``, so a case's data depend only on the seed and its place in its
group, not on how many others are generated.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np

from tanq_ray.data.phantom_anatomy import F32, TISSUES, HeadGrid, Labels, Subject, build, rotation, sample_subject
from tanq_ray.io_utils import atomic_path, write_text_atomic
from tanq_ray.labels import COCHLEA, VS

VERSION = 3
SUMMARY_NAME = "cohort.json"
MODALITIES = ("ceT1", "hrT2")
ROLES = {"labelled": 0, "unlabelled": 1, "eval": 2}

CONTRAST: dict[str, dict[str, float]] = {
    "ceT1": {
        "air": 0.00, "fat": 0.82, "soft": 0.30, "bone": 0.04, "marrow": 0.62, "csf": 0.09, "gm": 0.40,
        "wm": 0.57, "brainstem": 0.52, "cb_gm": 0.42, "vessel": 0.80, "dura": 0.50, "fluid": 0.08,
        "vitreous": 0.07, "lens": 0.25, "nerve": 0.46, "vs": 0.90,
    },
    "hrT2": {
        "air": 0.00, "fat": 0.48, "soft": 0.16, "bone": 0.03, "marrow": 0.30, "csf": 1.00, "gm": 0.36,
        "wm": 0.25, "brainstem": 0.29, "cb_gm": 0.38, "vessel": 0.06, "dura": 0.12, "fluid": 0.92,
        "vitreous": 0.95, "lens": 0.10, "nerve": 0.22, "vs": 0.55,
    },
}  # fmt: skip
VS_HETEROGENEITY = {"ceT1": 0.08, "hrT2": 0.12}
TEXTURE = 0.035


@dataclass(frozen=True)
class Acquisition:
    """One site's protocol for one modality."""

    fov: tuple[float, float]  # in-plane field of view (x, y), mm
    inplane: float  # in-plane spacing in units of the finest spacing (FINEST_FOV / size)
    slice_mm: float
    slab_mm: float  # z coverage
    noise: float  # Rician sigma relative to the CSF level (1.0)
    bias: float  # bias-field amplitude (log scale)
    scale: float  # stored value of relative intensity 1.0


@dataclass(frozen=True)
class Site:
    name: str
    city: str
    orientation: str  # "RAS" (affine diagonal +,+,+) or "LPS" (-,-,+)
    integer_values: bool
    protocols: dict[str, Acquisition]


SITES: dict[str, Site] = {
    "ldn": Site("ldn", "London", "RAS", True, {
        "ceT1": Acquisition((200.0, 230.0), 1.2, 1.0, 56.0, 0.018, 0.12, 1000.0),
        "hrT2": Acquisition((160.0, 176.0), 1.0, 1.0, 44.0, 0.025, 0.18, 1000.0),
    }),
    "etz": Site("etz", "Tilburg", "LPS", False, {
        "ceT1": Acquisition((210.0, 236.0), 1.28, 1.25, 66.0, 0.028, 0.18, 3000.0),
        "hrT2": Acquisition((170.0, 187.0), 1.15, 1.2, 44.0, 0.035, 0.25, 4000.0),
    }),
}  # fmt: skip
SITE_ORDER = ("ldn", "etz")
FINEST_FOV = 160.0  # mm: the finest acquisition (ldn hrT2) has FINEST_FOV / size in-plane spacing


@dataclass(frozen=True)
class Cohort:
    """Where :func:`generate_cohort` put the cohort and which cases it holds."""

    train_dir: Path
    eval_dir: Path
    eval_labels_dir: Path
    train_labels_dir: Path
    """Truth of the unlabelled training hrT2 (for the target-supervised reference row only)."""
    labelled_cases: list[str]
    unlabelled_cases: list[str]
    eval_case_ids: list[str]

    @property
    def root(self) -> Path:
        return self.train_dir.parent

    @property
    def summary_path(self) -> Path:
        return self.root / SUMMARY_NAME


@dataclass(frozen=True)
class CasePlan:
    role: str
    index: int  # position within its role
    number: int  # unique over the cohort
    site: str

    @property
    def case_id(self) -> str:
        return f"crossmoda2022_{self.site}_{self.number}"

    @property
    def modality(self) -> str:
        return "ceT1" if self.role == "labelled" else "hrT2"

    def files(self) -> dict[str, str]:
        """Paths relative to the cohort root."""
        if self.role == "labelled":
            return {"image": f"train/{self.case_id}_ceT1.nii.gz", "label": f"train/{self.case_id}_Label.nii.gz"}
        if self.role == "unlabelled":
            return {"image": f"train/{self.case_id}_hrT2.nii.gz", "label": f"train_hrT2_labels/{self.case_id}_Label.nii.gz"}
        return {"image": f"eval/{self.case_id}_hrT2.nii.gz", "label": f"eval_labels/{self.case_id}_Label.nii.gz"}


def plan_cases(cases: int, eval_cases: int) -> list[CasePlan]:
    plans, number = [], 1
    for role, count in (("labelled", cases), ("unlabelled", cases), ("eval", eval_cases)):
        for index in range(count):
            plans.append(CasePlan(role, index, number, SITE_ORDER[index % 2]))
            number += 1
    return plans


def case_rng(seed: int, role: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed % 2**64, ROLES[role], index]))


# --------------------------------------------------------------------------- one volume


@dataclass
class CaseVolume:
    image: np.ndarray  # float32 (X, Y, Z) as stored
    label: np.ndarray  # uint8, same grid
    affine: np.ndarray
    info: dict[str, Any]


def acquisition_grid(site: Site, modality: str, size: int) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and spacing of a site's acquisition; the affine's origin is set per subject."""
    acq = site.protocols[modality]
    inplane = acq.inplane * FINEST_FOV / size
    nx, ny, nz = round(acq.fov[0] / inplane), round(acq.fov[1] / inplane), round(acq.slab_mm / acq.slice_mm)
    shape = (max(8, nx), max(8, ny), max(4, nz))
    return shape, np.array([inplane, inplane, acq.slice_mm])


class Compositor:
    """Paints layers as they come: I <- I + alpha (value - I), value from the modality's table."""

    def __init__(self, shape: tuple[int, int, int], table: dict[str, float], heterogeneity: float):
        self.image = np.zeros(shape, F32)
        self.table, self.heterogeneity = table, F32(heterogeneity)

    def __call__(self, tissue: str, box, alpha: np.ndarray, modulation: np.ndarray | None) -> None:
        value = F32(self.table[tissue])
        if modulation is not None:
            value = value * (F32(1.0) + self.heterogeneity * modulation)
        region = self.image[box]
        region += alpha * (value - region)


def place_grid(
    subject: Subject, rng: np.random.Generator, site: Site, modality: str, size: int
) -> tuple[HeadGrid, tuple[float, float, float]]:
    """Random head pose and slab placement -> the acquisition grid in head coordinates (and the pose angles)."""
    u = rng.uniform
    shape, spacing = acquisition_grid(site, modality, size)
    angles = (u(-5.0, 5.0), u(-6.0, 6.0), u(-3.0, 3.0))
    rot = rotation(*(math.radians(a) for a in angles))
    shift = np.array([u(-4.0, 4.0), u(-4.0, 4.0), u(-3.0, 3.0)])
    centre = rot @ np.array([0.0, subject.head_centre[1], 0.0]) + shift
    centre += np.array([u(-3.0, 3.0), u(-3.0, 3.0), 0.0])
    centre[2] = shift[2] + u(-3.0, 3.0)
    signs = np.array([1.0, 1.0, 1.0]) if site.orientation == "RAS" else np.array([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = np.diag(signs * spacing)
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return HeadGrid(shape, affine, rot, shift), angles


def render_case(
    subject: Subject, rng: np.random.Generator, site: Site, modality: str, size: int
) -> CaseVolume:
    """Image one subject on a site's grid: pose, anatomy, contrast, texture, bias, Rician noise, scale."""
    u = rng.uniform
    acq = site.protocols[modality]
    grid, angles = place_grid(subject, rng, site, modality, size)
    shape, affine, spacing = grid.shape, grid.affine, grid.spacing
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2.0) + affine[:3, 3]
    table = {t: CONTRAST[modality][t] * float(u(0.94, 1.06)) for t in TISSUES}
    table["vs"] = CONTRAST[modality]["vs"] * float(u(0.92, 1.08))
    compositor = Compositor(shape, table, VS_HETEROGENEITY[modality])
    labels = build(subject, grid, float(np.mean(spacing)), compositor)
    image = compositor.image
    image *= F32(1.0) + F32(TEXTURE) * subject.texture(grid.x, grid.y, grid.z)

    # bias field: exp of a random quadratic in scanner coordinates (units of 100 mm from the FOV centre)
    world = [(affine[a, a] * np.arange(n) + affine[a, 3] - centre[a]) / 100.0 for a, n in enumerate(shape)]
    wx, wy, wz = (w.astype(F32).reshape([-1 if a == b else 1 for b in range(3)]) for a, w in enumerate(world))
    c = rng.uniform(-1.0, 1.0, 9) * acq.bias * np.array([1, 1, 1, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6])
    log_bias = (
        F32(c[0]) * wx + F32(c[1]) * wy + F32(c[2]) * wz + F32(c[3]) * wx * wx + F32(c[4]) * wy * wy
        + F32(c[5]) * wz * wz + F32(c[6]) * wx * wy + F32(c[7]) * wy * wz + F32(c[8]) * wx * wz
    )  # fmt: skip
    image *= np.exp(log_bias)
    sigma = acq.noise * float(u(0.8, 1.25))
    noise = rng.standard_normal((2, *shape), dtype=F32) * F32(sigma)
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
    scale = acq.scale * float(u(0.9, 1.1))
    image *= F32(scale)
    if site.integer_values:
        image = np.rint(image)
    image = image.astype(F32, copy=False)

    label = np.zeros(shape, np.uint8)
    _rasterise(label, labels, grid, subject)
    T = subject.tumour
    info = {
        "site": site.name,
        "modality": modality,
        "shape": list(shape),
        "spacing_mm": [round(float(v), 4) for v in spacing],
        "orientation": "".join(nib.aff2axcodes(affine)),
        "intensity_scale": round(scale, 2),
        "integer_values": site.integer_values,
        "noise_sigma": round(sigma * scale, 2),
        "bias_amplitude": acq.bias,
        "pose_deg": [round(a, 2) for a in angles],
        "vs_side": "right" if T.side == 0 else "left",
        "vs_extrameatal_diameter_mm": round(T.diameter, 1),
    }
    return CaseVolume(image, label, affine, info)


def _rasterise(label: np.ndarray, labels: Labels, grid: HeadGrid, subject: Subject) -> None:
    """VS, then the cochleae over it (:mod:`tanq_ray.labels`); a structure missing every voxel centre marks its nearest voxel."""
    T = subject.tumour
    mirror = np.array([T.sign, 1.0, 1.0])
    if labels.vs is not None and labels.vs[1].any():
        label[labels.vs[0]][labels.vs[1]] = VS
    else:
        ear = subject.ears[T.side]
        _mark_nearest(label, grid, (ear.porus + ear.iac_dir * 0.5 * (T.canal[0] + T.canal[1])) * mirror, VS)
    for side, ear in enumerate(subject.ears):
        box_mask = labels.cochleae.get(side)
        if box_mask is not None and box_mask[1].any():
            label[box_mask[0]][box_mask[1]] = COCHLEA
        else:
            _mark_nearest(label, grid, ear.cochlea_centre * np.array([1.0 if side == 0 else -1.0, 1.0, 1.0]), COCHLEA)


def _mark_nearest(label: np.ndarray, grid: HeadGrid, point_head: np.ndarray, value: int) -> None:
    world = grid.rot @ point_head + grid.shift
    index = np.rint((np.linalg.inv(grid.affine) @ np.append(world, 1.0))[:3]).astype(int)
    if np.all(index >= 0) and np.all(index < label.shape):
        label[tuple(index)] = value


# --------------------------------------------------------------------------- cohort


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def _cohort(root: Path, plans: list[CasePlan]) -> Cohort:
    ids = {role: [p.case_id for p in plans if p.role == role] for role in ROLES}
    return Cohort(
        root / "train", root / "eval", root / "eval_labels", root / "train_hrT2_labels", ids["labelled"], ids["unlabelled"], ids["eval"]
    )


COHORT_FOLDERS = ("train", "eval", "eval_labels", "train_hrT2_labels")
"""The only folders of the cohort root the phantom writes files in."""


class CohortFolderError(FileExistsError):
    """The phantom would write or delete a file that is not its own."""


def _existing_summary(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cohort_file(root: Path, rel: str) -> Path:
    """``root / rel`` when ``rel`` names a file in one of :data:`COHORT_FOLDERS`; else a :class:`CohortFolderError`."""
    parts = Path(rel).parts
    if Path(rel).is_absolute() or len(parts) != 2 or parts[0] not in COHORT_FOLDERS or parts[1] in ("", ".", ".."):
        raise CohortFolderError(
            f"the phantom's record '{root / SUMMARY_NAME}' lists '{rel}', which is not a file of "
            f"{'/, '.join(COHORT_FOLDERS)}/ in '{root}': refusing to write or delete it (is this folder a phantom cohort?)"
        )
    return root / rel


def _recorded_files(root: Path, summary: dict[str, Any] | None) -> set[str]:
    """The files an earlier ``cohort.json`` of ours says we wrote (each checked to lie inside the cohort)."""
    if summary is None:
        return set()
    recorded = {rel for case in summary.get("cases", {}).values() for rel in case.get("files", {}).values()}
    for rel in recorded:
        _cohort_file(root, rel)
    return recorded


def generate_cohort(
    out_dir: str | Path,
    cases: int = 8,
    eval_cases: int = 4,
    size: int = 128,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> Cohort:
    """Write a phantom cohort under ``out_dir`` (layout in the module docstring) and return it.

    Deterministic for the arguments. If ``out_dir`` already holds a complete cohort
    written with the same arguments, nothing is rewritten, so file times (and
    downstream caches keyed on them) stay valid. ``cohort.json`` is the record of
    what the phantom wrote: files of an earlier, different phantom cohort that it
    lists are removed; a file it does not list is never overwritten
    (:class:`CohortFolderError`), and a listed path outside the cohort's folders
    is refused.
    ``progress(done, total, description)`` is called after each volume.
    """
    if cases < 1 or eval_cases < 0:
        raise ValueError(f"phantom: need cases >= 1 and eval_cases >= 0, got cases={cases}, eval_cases={eval_cases}")
    if size < 32:
        raise ValueError(f"phantom: size must be >= 32 (in-plane matrix of the finest acquisition), got {size}")
    root = Path(out_dir)
    plans = plan_cases(cases, eval_cases)
    params = {"cases": cases, "eval_cases": eval_cases, "size": size, "seed": seed}
    cohort = _cohort(root, plans)
    old = _existing_summary(root / SUMMARY_NAME)
    ours = _recorded_files(root, old)
    wanted = {rel for p in plans for rel in p.files().values()}
    complete = old is not None and old.get("complete", True) and old.get("version") == VERSION and old.get("params") == params
    if complete and all((root / rel).is_file() for rel in wanted):
        return cohort
    foreign = sorted(rel for rel in wanted - ours if (root / rel).exists())
    if foreign:
        raise CohortFolderError(
            f"'{root}' already holds {len(foreign)} file(s) the phantom did not write (its cohort.json does not list them), "
            f"e.g. '{root / foreign[0]}': refusing to overwrite them; choose an empty folder"
        )
    for rel in ours - wanted:  # files of a previous phantom cohort that this one does not rewrite
        _cohort_file(root, rel).unlink(missing_ok=True)
    # until the full summary is written, the folder holds an incomplete cohort whose files are ours to rewrite
    claim = {"version": VERSION, "params": params, "complete": False, "cases": {p.case_id: {"files": p.files()} for p in plans}}
    write_text_atomic(root / SUMMARY_NAME, json.dumps(claim, indent=1))

    start = time.perf_counter()
    records: dict[str, Any] = {}
    for n, plan in enumerate(plans, 1):
        rng = case_rng(seed, plan.role, plan.index)
        subject = sample_subject(rng)
        volume = render_case(subject, rng, SITES[plan.site], plan.modality, size)
        files = plan.files()
        _save_nifti(volume.image, volume.affine, root / files["image"])
        if "label" in files:
            _save_nifti(volume.label, volume.affine, root / files["label"])
        records[plan.case_id] = {"role": plan.role, **volume.info, "files": files}
        if progress is not None:
            progress(n, len(plans), f"{plan.case_id} {plan.modality} {tuple(volume.image.shape)}")

    summary = {
        "generator": "tanq_ray.data.phantom",
        "version": VERSION,
        "params": params,
        "complete": True,
        "labelled_cases": cohort.labelled_cases,
        "unlabelled_cases": cohort.unlabelled_cases,
        "eval_case_ids": cohort.eval_case_ids,
        "sites": {
            name: {
                "city": site.city,
                "orientation": site.orientation,
                "integer_values": site.integer_values,
                "protocols": {
                    modality: {
                        "shape": list(acquisition_grid(site, modality, size)[0]),
                        "spacing_mm": [round(float(v), 4) for v in acquisition_grid(site, modality, size)[1]],
                        "fov_mm": [*acq.fov, acq.slab_mm],
                        "noise": acq.noise,
                        "bias": acq.bias,
                        "scale": acq.scale,
                    }
                    for modality, acq in site.protocols.items()
                },
            }
            for name, site in SITES.items()
        },
        "cases": records,
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_text_atomic(root / SUMMARY_NAME, json.dumps(summary, indent=1))
    return cohort
