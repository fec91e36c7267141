"""Analytic head anatomy of the phantom: per-subject parameters -> partial-volume tissue layers.

Everything is defined in *head coordinates* (mm): x towards the subject's right,
y anterior, z superior; origin on the midline at the height and antero-posterior
position of the internal auditory canals (IACs). Structures of one side are written
in a *side frame* ``(u, y, z)`` with ``u = ±x`` the distance lateral of the midline,
so the left side is the mirror image of the right (with its own random parameters).

Each structure is a signed distance function (SDF, negative inside, ~mm). A grid
(:class:`HeadGrid`) gives every voxel centre's head coordinates; a structure becomes
a *layer* ``(tissue, box, alpha)`` with ``alpha = clip(0.5 - sdf / h, 0, 1)``
(``h`` ~ voxel size: a one-voxel partial-volume ramp), sent in painting order to a
sink (:class:`tanq_ray.data.phantom.Compositor` paints ``I += alpha (value - I)``, so
later layers cover earlier ones; full-volume arrays are not kept). Labels are the
inside test ``sdf < 0`` of the final VS and cochlea shapes at the voxel centres.

Painting order (what covers what): head (soft tissue) -> scalp fat -> temporalis ->
skull + diploe -> cranial cavity (CSF) -> cerebrum (GM, WM undulating, GM-lined
sulci, ventricles) -> posterior fossa (cerebellar cortex, its white matter core,
folia fissures, brainstem + middle cerebellar peduncles, 4th ventricle, basilar
artery, CSF cisterns left open around the brainstem and the IAC porus) -> tentorium
and falx (dura) -> skull base plate, petrous bones, clivus (with marrow), sigmoid
sinuses, mastoid air cells, middle ear, external auditory canals -> orbits (fat,
globes, lenses, optic nerves) and air sinuses -> IACs (CSF tubes, flared porus)
with the VII/VIII nerve bundle running from the fundus to the brainstem ->
labyrinth (vestibule, three semicircular canals, cochlea: 2.4-2.75-turn tapering
spiral tube) -> vestibular schwannoma.

Brain tissue is sampled at *warped* coordinates: a large VS pushes the brainstem and
cerebellum away radially (``r' = sqrt(r^2 - R^2)`` around the tumour centre), so
the tumour indents them instead of overlapping; bone is not warped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol
import numpy as np

F32 = np.float32
Box = tuple[slice, slice, slice]

TISSUES: tuple[str, ...] = (
    "air", "fat", "soft", "bone", "marrow", "csf", "gm", "wm", "brainstem", "cb_gm",
    "vessel", "dura", "fluid", "vitreous", "lens", "nerve", "vs",
)  # fmt: skip


# --------------------------------------------------------------------------- primitives


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / F32(edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two SDFs (polynomial smooth minimum, blend width ``k`` mm)."""
    h = np.maximum(k - np.abs(a - b), 0.0) / F32(k)
    return np.minimum(a, b) - h * h * F32(k / 4.0)


def sd_ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    """Approximate SDF of an axis-aligned ellipsoid (exact on the axes, good near the surface)."""
    X = (x - F32(centre[0])) / F32(radii[0])
    Y = (y - F32(centre[1])) / F32(radii[1])
    Z = (z - F32(centre[2])) / F32(radii[2])
    k0 = np.sqrt(X * X + Y * Y + Z * Z)
    k1 = np.sqrt((X / F32(radii[0])) ** 2 + (Y / F32(radii[1])) ** 2 + (Z / F32(radii[2])) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, F32(1e-6))


def to_local(x, y, z, centre, rot: np.ndarray):
    """Coordinates in a rotated frame whose axes are the columns of ``rot``."""
    dx, dy, dz = x - F32(centre[0]), y - F32(centre[1]), z - F32(centre[2])
    r = rot.astype(F32)
    return (
        r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
        r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
        r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz,
    )


def sd_tube(x, y, z, a, b, ra: float, rb: float) -> tuple[np.ndarray, np.ndarray]:
    """SDF of a capsule from ``a`` to ``b`` whose radius goes linearly ``ra`` -> ``rb``; also returns t in [0, 1]."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    length2 = float(d @ d)
    px, py, pz = x - F32(a[0]), y - F32(a[1]), z - F32(a[2])
    t = np.clip((px * F32(d[0]) + py * F32(d[1]) + pz * F32(d[2])) / F32(length2), 0.0, 1.0)
    qx, qy, qz = px - t * F32(d[0]), py - t * F32(d[1]), pz - t * F32(d[2])
    return np.sqrt(qx * qx + qy * qy + qz * qz) - (F32(ra) + t * F32(rb - ra)), t


def sd_torus(x, y, z, centre, normal, major: float, minor: float) -> np.ndarray:
    lx, ly, lz = to_local(x, y, z, centre, frame_from_axis(normal))
    ring = np.sqrt(lx * lx + ly * ly) - F32(major)
    return np.sqrt(ring * ring + lz * lz) - F32(minor)


def frame_from_axis(axis, roll: float = 0.0) -> np.ndarray:
    """Orthonormal 3x3 matrix whose third column is ``axis`` (normalised)."""
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(helper, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(a, e1)
    c, s = math.cos(roll), math.sin(roll)
    return np.stack([c * e1 + s * e2, -s * e1 + c * e2, a], axis=1)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation about z (yaw), then x (pitch), then y (roll); angles in radians."""
    cz, sz, cx, sx = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(roll), math.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return ry @ rx @ rz


@dataclass(frozen=True)
class CosineField:
    """Smooth random field: sum of ``n`` plane cosines, zero mean, unit RMS, wavelengths in mm."""

    k: np.ndarray  # (n, 3) wave vectors, rad/mm
    phase: np.ndarray  # (n,)

    @classmethod
    def sample(cls, rng: np.random.Generator, n: int, wavelength: tuple[float, float]) -> "CosineField":
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength, size=n)
        return cls(dirs * (2 * math.pi / lam)[:, None], rng.uniform(0, 2 * math.pi, size=n))

    @property
    def gradient_rms(self) -> float:
        """RMS of the gradient magnitude (rad/mm): turns ``|field|`` into an approximate distance in mm."""
        return float(np.sqrt(np.mean(np.sum(self.k**2, axis=1))))

    def __call__(self, x, y, z) -> np.ndarray:
        amp = F32(math.sqrt(2.0 / len(self.phase)))
        out = np.zeros(np.broadcast(x, y, z).shape, F32)
        for (kx, ky, kz), ph in zip(self.k.astype(F32), self.phase.astype(F32)):
            out += np.cos(kx * x + ky * y + kz * z + ph)
        return out * amp


# --------------------------------------------------------------------------- subject parameters


@dataclass(frozen=True)
class Ear:
    """Temporal bone of one side, in the side frame (u lateral of the midline, y, z)."""

    porus: np.ndarray  # medial opening of the IAC (porus acusticus)
    iac_dir: np.ndarray  # unit vector porus -> fundus (mostly +u)
    iac_len: float
    iac_r: float
    face_angle: float  # normal of the posterior petrous face, radians from +u towards +y
    petrous_thick: float  # posterior -> anterior petrous face distance, mm
    ridge_z: float  # petrous ridge height
    cochlea: np.ndarray  # (n, 4) spiral centre-line points (u, y, z) and tube radius
    cochlea_centre: np.ndarray
    vestibule: np.ndarray
    axis_scc: tuple[np.ndarray, np.ndarray, np.ndarray]  # centres of lateral, posterior, superior canals
    scc_r: float

    @property
    def fundus(self) -> np.ndarray:
        return self.porus + self.iac_len * self.iac_dir


@dataclass(frozen=True)
class Tumour:
    """Vestibular schwannoma in the side frame of ``side`` (0 = right, 1 = left)."""

    side: int
    diameter: float  # extrameatal (cisternal) diameter, 0 = purely intracanalicular
    canal: tuple[float, float, float]  # (t0, t1, radius): segment of the IAC axis filled, mm from the porus
    centre: np.ndarray  # extrameatal ellipsoid centre (side frame)
    radii: np.ndarray
    frame: np.ndarray
    lobes: tuple[tuple[np.ndarray, float], ...]  # (centre, radius) of extra lobules
    bumps: CosineField  # surface lobulation
    bump_amp: float
    texture: CosineField  # internal heterogeneity

    @property
    def sign(self) -> float:
        return 1.0 if self.side == 0 else -1.0

    @property
    def warp_radius(self) -> float:
        """Radius of the mass effect on the brain (0 = none)."""
        return 0.0 if self.diameter < 9.0 else 0.78 * float(self.radii.min()) - self.bump_amp

    def reach(self) -> float:
        """Radius of a ball around :attr:`centre` that holds the whole tumour."""
        lobe = max((np.linalg.norm(c - self.centre) + r for c, r in self.lobes), default=0.0)
        return float(max(self.radii.max() * 1.25, lobe + 2.0))


@dataclass(frozen=True)
class Subject:
    """Everything random about one subject's anatomy (see :func:`sample_subject`)."""

    head_centre: np.ndarray
    head_radii: np.ndarray
    skin: float
    scalp: float
    skull: float
    ears: tuple[Ear, Ear]  # right, left
    clivus_y: float  # clivus posterior surface y at z = 0
    tent_z: float  # tentorium height on the midline at the occiput (y = -85 mm)
    pons: tuple[float, float, float]  # half-width, half-depth, prepontine gap
    ventricles: float  # ventricle scale (age/atrophy)
    csf_rim: float  # subarachnoid CSF thickness over the cortex
    cortex: float  # cortical GM thickness
    tumour: Tumour
    sulci: CosineField
    gyri: CosineField
    texture: CosineField
    folia: CosineField
    honeycomb: np.ndarray  # (3,) phases of the mastoid air-cell lattice


def _cochlea_line(centre: np.ndarray, axis: np.ndarray, roll: float, scale: float, turns: float) -> np.ndarray:
    """Centre line of a tapering spiral tube: base radius ~2.9 mm, 2.4-2.75 turns, ~3.5 mm high."""
    frame = frame_from_axis(axis, roll)
    t = np.linspace(0.0, 1.0, 140)
    theta = 2 * math.pi * turns * t
    rho = 2.9 * scale * (1.0 - 0.72 * t)
    height = 3.6 * scale * t**0.85
    radius = 0.95 * math.sqrt(scale) * (1.0 - 0.42 * t)
    pts = centre + (rho * np.cos(theta))[:, None] * frame[:, 0] + (rho * np.sin(theta))[:, None] * frame[:, 1]
    pts = pts + height[:, None] * frame[:, 2] - 1.6 * scale * frame[:, 2]
    return np.concatenate([pts, radius[:, None]], axis=1)


def _sample_ear(rng: np.random.Generator, base_porus: float, base_len: float) -> Ear:
    u = rng.uniform
    porus = np.array([base_porus + u(-0.8, 0.8), u(-1.5, 1.5), u(-1.0, 1.0)])
    iac_dir = np.array([1.0, u(-0.05, 0.15), u(-0.05, 0.08)])
    iac_dir /= np.linalg.norm(iac_dir)
    iac_len = base_len + u(-0.7, 0.7)
    fundus = porus + iac_len * iac_dir
    scale = u(0.85, 1.1)
    centre = fundus + np.array([5.5 + u(-0.6, 0.6), 4.2 + u(-0.8, 0.8), -0.8 + u(-0.6, 0.6)]) * scale
    axis = np.array([0.5, 0.45, -0.75]) + rng.normal(0.0, 0.08, 3)
    cochlea = _cochlea_line(centre, axis, u(0, 2 * math.pi), scale, u(2.4, 2.75))
    vestibule = fundus + np.array([6.0, -2.6, 0.6]) + rng.normal(0.0, 0.3, 3)
    scc = (
        vestibule + np.array([2.8, -3.2, 1.4]),  # lateral (horizontal) canal
        vestibule + np.array([0.8, -4.6, -0.6]),  # posterior canal
        vestibule + np.array([-0.5, -1.0, 4.2]),  # superior canal
    )
    return Ear(
        porus=porus, iac_dir=iac_dir, iac_len=iac_len, iac_r=u(1.9, 2.5),
        face_angle=math.radians(u(40.0, 50.0)), petrous_thick=u(21.0, 25.0), ridge_z=u(8.0, 11.0),
        cochlea=cochlea, cochlea_centre=centre, vestibule=vestibule, axis_scc=scc, scc_r=u(2.8, 3.4),
    )  # fmt: skip


def _sample_tumour(rng: np.random.Generator, ear: Ear, side: int) -> Tumour:
    u = rng.uniform
    if u() < 0.3:  # purely intracanalicular
        diameter = 0.0
        length = u(4.0, min(10.0, ear.iac_len - 0.5))
        t0 = u(-0.5, ear.iac_len - length)
        canal = (t0, t0 + length, ear.iac_r * u(0.9, 1.05))
    else:  # "ice-cream cone": canal part + cisternal ball, 7-30 mm
        diameter = float(math.exp(u(math.log(7.0), math.log(30.0))))
        canal = (-2.0, ear.iac_len * u(0.45, 1.0), ear.iac_r + 0.35)
    # The cisternal part grows medially and backwards from the porus into the cerebellopontine angle.
    large = min(max((diameter - 10.0) / 20.0, 0.0), 1.0)  # large ones grow more backwards along the petrous face
    direction = np.array([-0.85 + 0.25 * large, -0.45 - 0.3 * large + u(-0.15, 0.15), u(-0.12, 0.12)])
    direction /= np.linalg.norm(direction)
    half = max(diameter, 4.0) / 2.0
    centre = ear.porus + direction * (0.72 * half)
    radii = half * np.array([1.0, u(0.82, 1.05), u(0.85, 1.1)])
    frame = frame_from_axis(direction, u(0, 2 * math.pi))
    frame = frame[:, [2, 0, 1]]  # first local axis along the growth direction
    lobes = []
    for _ in range(int(rng.integers(0, 3)) if diameter > 0 else 0):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        if d[0] > 0:  # keep lobules out of the petrous bone (lateral)
            d[0] = -d[0]
        lobes.append((centre + d * half * u(0.45, 0.7), half * u(0.35, 0.55)))
    return Tumour(
        side=side, diameter=diameter, canal=canal, centre=centre, radii=radii, frame=frame, lobes=tuple(lobes),
        bumps=CosineField.sample(rng, 6, (0.6 * max(half, 3.0), 1.4 * max(half, 3.0))), bump_amp=0.07 * half,
        texture=CosineField.sample(rng, 16, (2.5, 10.0)),
    )  # fmt: skip


def sample_subject(rng: np.random.Generator) -> Subject:
    """Draw one subject: head size, temporal bones, brain, CSF spaces and a VS on one random side."""
    u = rng.uniform
    base_porus, base_len = u(20.0, 24.0), u(9.0, 12.0)
    ears = (_sample_ear(rng, base_porus, base_len), _sample_ear(rng, base_porus, base_len))
    side = int(rng.integers(0, 2))
    tumour = _sample_tumour(rng, ears[side], side)
    return Subject(
        head_centre=np.array([0.0, -8.0 + u(-3, 3), 15.0]),
        head_radii=np.array([75.0 * u(0.94, 1.06), 93.0 * u(0.93, 1.06), 100.0]),
        skin=1.5, scalp=u(3.5, 6.5), skull=u(5.0, 7.5), ears=ears,
        clivus_y=u(14.0, 17.0), tent_z=u(8.0, 13.0), pons=(u(14.0, 16.5), u(11.5, 13.5), u(3.0, 5.0)),
        ventricles=u(0.8, 1.5), csf_rim=u(0.8, 2.0), cortex=u(2.4, 3.2), tumour=tumour,
        sulci=CosineField.sample(rng, 10, (20.0, 34.0)), gyri=CosineField.sample(rng, 8, (12.0, 25.0)),
        texture=CosineField.sample(rng, 12, (4.0, 14.0)), folia=CosineField.sample(rng, 8, (6.0, 14.0)),
        honeycomb=rng.uniform(0, 2 * math.pi, 3),
    )  # fmt: skip


# --------------------------------------------------------------------------- grids and layers


class HeadGrid:
    """Head coordinates of every voxel centre of an axis-aligned acquisition grid.

    ``affine`` maps voxel indices to scanner (world) mm; the head sits in the scanner
    as ``world = pose_rot @ head + pose_shift``. Arrays are float32 of the grid shape;
    :meth:`box` returns the index box covering a ball given in head coordinates.
    """

    def __init__(self, shape: tuple[int, int, int], affine: np.ndarray, pose_rot: np.ndarray, pose_shift: np.ndarray):
        self.shape = shape
        self.affine = np.asarray(affine, float)
        self.rot = np.asarray(pose_rot, float)
        self.shift = np.asarray(pose_shift, float)
        m = self.rot.T @ self.affine[:3, :3]
        b = self.rot.T @ (self.affine[:3, 3] - self.shift)
        idx = [np.arange(n, dtype=F32) for n in shape]
        axes = (idx[0][:, None, None], idx[1][None, :, None], idx[2][None, None, :])
        self.x, self.y, self.z = (
            (F32(m[r, 0]) * axes[0] + F32(m[r, 1]) * axes[1]) + (F32(m[r, 2]) * axes[2] + F32(b[r])) for r in range(3)
        )
        self.spacing = np.abs(np.diag(self.affine[:3, :3]))
        self._inv = np.linalg.inv(self.affine)
        self.warp: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    FULL: Box = (slice(None), slice(None), slice(None))

    def box(self, centre, radius: float) -> Box | None:
        """Index box holding the ball (head coordinates); None if it misses the grid."""
        world = self.rot @ np.asarray(centre, float) + self.shift
        index = (self._inv @ np.append(world, 1.0))[:3]
        half = radius / self.spacing
        lo = np.maximum(np.floor(index - half).astype(int), 0)
        hi = np.minimum(np.ceil(index + half).astype(int) + 1, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]

    def points(self, box: Box, warped: bool = False):
        if warped and self.warp is not None:
            return tuple(a[box] for a in self.warp)
        return self.x[box], self.y[box], self.z[box]

    def set_warp(self, centre: np.ndarray, radius: float) -> None:
        """Brain coordinates pushed away from a tumour centre: r' = sqrt(r^2 - R^2)."""
        if radius <= 0:
            self.warp = None
            return
        dx, dy, dz = self.x - F32(centre[0]), self.y - F32(centre[1]), self.z - F32(centre[2])
        r2 = dx * dx + dy * dy + dz * dz
        factor = np.sqrt(np.maximum(r2 - F32(radius**2), 0.0) / np.maximum(r2, F32(1e-6)))
        self.warp = (F32(centre[0]) + dx * factor, F32(centre[1]) + dy * factor, F32(centre[2]) + dz * factor)


class LayerSink(Protocol):
    """Receives the layers in painting order (e.g. composites them into an image)."""

    def __call__(self, tissue: str, box: Box, alpha: np.ndarray, modulation: np.ndarray | None) -> None: ...


@dataclass
class Labels:
    """Inside masks (voxel centre inside the shape) of the labelled structures, each in its index box."""

    vs: tuple[Box, np.ndarray] | None
    cochleae: dict[int, tuple[Box, np.ndarray]]  # by side: 0 right, 1 left


def _mirror(sign: float) -> np.ndarray:
    return np.array([sign, 1.0, 1.0])


class _Scene:
    """One subject on one grid: the skull-base geometry shared by several structures, and
    the painting steps (:meth:`paint_all`), each adding partial-volume layers in order."""

    def __init__(self, subject: Subject, grid: HeadGrid, h: float, sink: LayerSink):
        self.s, self.g, self.h, self.sink = subject, grid, F32(h), sink
        self.cochleae: dict[int, tuple[Box, np.ndarray]] = {}
        self.vs: tuple[Box, np.ndarray] | None = None
        tumour = subject.tumour
        grid.set_warp(tumour.centre * _mirror(tumour.sign), tumour.warp_radius)
        self.x, self.y, self.z = grid.points(HeadGrid.FULL)
        self.q = grid.points(HeadGrid.FULL, warped=True)

    def add(self, tissue: str, box: Box | None, sdf: np.ndarray, modulation: np.ndarray | None = None) -> None:
        if box is None:
            return
        alpha = np.clip(0.5 - sdf / self.h, 0.0, 1.0).astype(F32, copy=False)
        if alpha.any():
            self.sink(tissue, box, alpha, modulation)

    def paint_all(self) -> Labels:
        self.head()
        self.cerebrum()
        self.posterior_fossa()
        self.dura()
        self.skull_base()
        self.face()
        self.inner_ears()
        self.tumour()
        return Labels(self.vs, self.cochleae)

    # ------------------------------------------------------------------ skull-base geometry
    # Functions of head coordinates (any arrays); the brain evaluates them at warped ones.

    def e_post(self, x, y):
        """Distance into the petrous bone from its posterior face (per side by the sign of x)."""
        right, left = self.s.ears
        pos = x >= 0
        pu = np.where(pos, F32(right.porus[0]), F32(left.porus[0]))
        py = np.where(pos, F32(right.porus[1]), F32(left.porus[1]))
        ca = np.where(pos, F32(math.cos(right.face_angle)), F32(math.cos(left.face_angle)))
        sa = np.where(pos, F32(math.sin(right.face_angle)), F32(math.sin(left.face_angle)))
        return (np.abs(x) - pu) * ca + (y - py) * sa

    def clivus_back(self, z):
        """y of the clivus' posterior surface: it slopes backwards as it descends."""
        return F32(self.s.clivus_y) + F32(0.4) * z

    @staticmethod
    def floor_z(x, y):
        """Skull-base height outside the posterior fossa: a bowl for the middle fossa (deepest
        ~38 mm lateral), the sella in the middle, the orbital roofs in front."""
        ax = np.abs(x)
        ant = smoothstep(38.0, 48.0, y - F32(0.006) * x * x)
        central = smoothstep(17.0, 12.0, ax) * smoothstep(10.0, 16.0, y) * (1.0 - ant)
        bowl = F32(-16.0) + F32(0.010) * (ax - F32(38.0)) ** 2 + F32(0.012) * (y - F32(15.0)) ** 2
        return np.minimum(bowl, F32(4.0)) * (F32(1.0) - central - ant) + F32(2.0) * central + F32(22.0) * ant

    def tent_z(self, x, y):
        """Tentorium: a tent rising forwards and towards the midline, lowest at the lateral sinuses."""
        return F32(self.s.tent_z) + F32(0.35) * (y + F32(85.0)) - F32(0.006) * x * x

    def pf_half(self, x, y, z):
        """Negative behind both petrous faces and the clivus."""
        return np.maximum(self.e_post(x, y), y - self.clivus_back(z))

    def cavity(self, x, y, z, inner):
        """Cranial cavity: inside the inner table, above the skull base or in the posterior fossa."""
        return np.maximum(inner, np.minimum(self.floor_z(x, y) - z, self.pf_half(x, y, z)))

    @staticmethod
    def petrous(x, y, z, ear: Ear, sign: float):
        """Petrous pyramid of one side: a slab behind its anterior face, in front of its posterior face."""
        u = x * F32(sign)
        e = (u - F32(ear.porus[0])) * F32(math.cos(ear.face_angle))
        e = e + (y - F32(ear.porus[1])) * F32(math.sin(ear.face_angle))
        lateral = np.maximum(F32(44.0) - u, y - F32(12.0))  # tympanic/mastoid part reaches further forward
        sdf = np.maximum(np.maximum(-e, np.minimum(e - F32(ear.petrous_thick), lateral)), F32(8.0) - u)
        top = z - F32(ear.ridge_z) + F32(0.12) * (u - F32(30.0))
        return np.maximum(sdf, np.maximum(top, F32(-38.0) - z))

    def clivus(self, x, y, z):
        """Clivus: elliptic cross-section (20 x 13 mm) behind the sphenoid, widening into the condyles."""
        half_width = F32(10.0) + F32(6.0) * smoothstep(-8.0, -30.0, z)
        across = np.sqrt((x / half_width) ** 2 + ((y - self.clivus_back(z) - F32(6.5)) / F32(6.5)) ** 2)
        return np.maximum((across - F32(1.0)) * F32(6.5), np.maximum(z - F32(7.0), F32(-45.0) - z))

    # ------------------------------------------------------------------ painting steps

    def head(self) -> None:
        """Soft tissue, scalp fat, temporalis, skull with diploe; the CSF-filled cranial cavity."""
        s, x, y, z, full = self.s, self.x, self.y, self.z, HeadGrid.FULL
        self.sdf_head = sd_ellipsoid(x, y, z, s.head_centre, s.head_radii)
        depth = -self.sdf_head
        self.add("soft", full, self.sdf_head)
        s1 = s.skin + s.scalp
        s2 = s1 + s.skull
        self.add("fat", full, np.maximum(F32(s.skin) - depth, depth - F32(s1)))
        for sign in (1.0, -1.0):  # temporalis muscles, under the scalp fat, over the squamous bone
            c = (sign * (s.head_radii[0] - 9.0), 18.0, 14.0)
            box = self.g.box(c, 32.0)
            if box:
                bx, by, bz = self.g.points(box)
                muscle = sd_ellipsoid(bx, by, bz, c, (6.5, 26.0, 26.0))
                self.add("soft", box, np.maximum(muscle, F32(s.skin + 2.0) + self.sdf_head[box]))
        self.add("bone", full, np.maximum(F32(s1) - depth, depth - F32(s2)))
        self.add("marrow", full, np.abs(depth - F32((s1 + s2) / 2)) - F32(0.18 * s.skull))
        self.outer_table = self.sdf_head + F32(s1)  # negative inside the skull's outer surface
        self.sdf_inner = F32(s2) - depth
        self.sdf_cav = self.cavity(x, y, z, self.sdf_inner)
        self.add("csf", full, self.sdf_cav)
        # the brain lives at warped coordinates
        qx, qy, qz = self.q
        if self.g.warp is not None:
            self.cav_q = self.cavity(qx, qy, qz, F32(s2) + sd_ellipsoid(qx, qy, qz, s.head_centre, s.head_radii))
        else:
            self.cav_q = self.sdf_cav
        self.pf_region = np.maximum(np.maximum(self.pf_half(qx, qy, qz), qz - self.tent_z(qx, qy)), self.cav_q)
        self.diencephalon = sd_ellipsoid(qx, qy, qz, (0.0, -4.0, 36.0), (16.0, 24.0, 14.0))

    def cerebrum(self) -> None:
        """Cortex (CSF rim, GM ribbon, undulating WM, GM-lined sulci), thalami, ventricles."""
        s, g, full = self.s, self.g, HeadGrid.FULL
        qx, qy, qz = self.q
        pet = np.minimum(self.petrous(qx, qy, qz, s.ears[0], 1.0), self.petrous(qx, qy, qz, s.ears[1], -1.0))
        falx_gap = np.maximum(F32(1.2) - np.abs(qx), -self.diencephalon)
        cer = np.maximum(np.maximum(self.cav_q, F32(0.8) - self.pf_region), np.maximum(F32(0.8) - pet, falx_gap))
        rim = F32(s.csf_rim)
        self.add("gm", full, cer + rim)
        self.add("wm", full, cer + rim + F32(s.cortex + 1.0) + F32(2.2) * (s.gyri(qx, qy, qz) + F32(0.6)))
        # sulci: sheets where a random field crosses zero, CSF lined by GM, down to ~11-13 mm
        sul = np.abs(s.sulci(qx, qy, qz)) / F32(s.sulci.gradient_rms)
        self.add("gm", full, np.maximum(sul - F32(0.8 * s.cortex + 0.3), cer + F32(13.0)))
        self.add("csf", full, np.maximum(sul - F32(0.25 + 0.2 * s.csf_rim), cer + F32(11.0)))
        wr, vs = self.s.tumour.warp_radius, s.ventricles
        shapes: list[tuple[str, tuple, tuple]] = []
        for sign in (1.0, -1.0):
            shapes += [
                ("gm", (sign * 9.5, -9.0, 31.0), (8.0, 13.0, 9.0)),  # thalamus
                ("csf", (sign * 12.0, 12.0, 40.0), (4.5 * vs, 15.0, 7.0 * vs)),  # frontal horn / body
                ("csf", (sign * 21.0, -28.0, 33.0), (5.5 * vs, 11.0, 7.0 * vs)),  # atrium
                ("csf", (sign * 24.0, -45.0, 30.0), (3.0 * vs, 10.0, 4.0 * vs)),  # occipital horn
                ("csf", (sign * 31.0, 8.0, 4.0), (2.4 * vs, 13.0, 2.2 * vs)),  # temporal horn
            ]
        shapes.append(("csf", (0.0, -6.0, 31.0), (1.6 * vs, 11.0, 8.0)))  # third ventricle
        for tissue, c, r in sorted(shapes, key=lambda t: t[0] != "gm"):
            box = g.box(c, max(r) + wr + 2.0)
            if box:
                bx, by, bz = g.points(box, warped=True)
                self.add(tissue, box, sd_ellipsoid(bx, by, bz, c, r))

    def posterior_fossa(self) -> None:
        """Cerebellum (cortex, folia, WM core), brainstem + peduncles, 4th ventricle, cisterns, basilar artery."""
        s, full = self.s, HeadGrid.FULL
        qx, qy, qz = self.q
        bulge = np.exp(-(((qz + F32(2.0)) / F32(13.0)) ** 2))  # pons bulge; medulla below, midbrain above
        bax = F32(10.0) + F32(s.pons[0] - 10.0) * bulge
        bay = F32(9.0) + F32(s.pons[1] - 9.0) * bulge
        bcy = self.clivus_back(qz) - F32(s.pons[2]) - bay  # parallel to the clivus, prepontine gap pons[2]
        brainstem = (np.sqrt((qx / bax) ** 2 + ((qy - bcy) / bay) ** 2) - F32(1.0)) * np.minimum(bax, bay)
        peduncles = sd_ellipsoid(np.abs(qx), qy - bcy, qz, (11.5, -7.5, -2.0), (7.0, 7.5, 8.5))
        stem = smin(brainstem, peduncles, 4.0)
        # CSF spaces the cerebellum leaves open
        wide = F32(2.0) + F32(4.0) * smoothstep(-14.0, -4.0, qz)
        front = np.maximum(bcy - F32(1.0) - qy, np.abs(qx) - bax - wide)  # prepontine / premedullary
        cpa = np.minimum(*(
            sd_ellipsoid(qx, qy, qz, (sign * (e.porus[0] - 4.0), e.porus[1] - 1.0, e.porus[2]), (6.5, 6.0, 6.5))
            for sign, e in zip((1.0, -1.0), s.ears)
        ))  # fmt: skip
        magna = sd_ellipsoid(qx, qy, qz, (0.0, -66.0, -38.0), (8.0, 9.0, 7.0))
        low_cleft = np.maximum(qz + F32(12.0), qy - bcy + F32(24.0))
        vallecula = np.maximum(np.abs(qx) - F32(0.7), np.minimum(low_cleft, qy + F32(76.0)))
        cb = np.maximum(self.pf_region + F32(0.8), F32(1.2) - stem)
        cb = np.maximum(cb, -np.minimum(np.minimum(front, cpa), np.minimum(magna, vallecula)))
        self.add("cb_gm", full, cb)
        depth = -cb
        core = sd_ellipsoid(np.abs(qx), qy, qz, (21.0, -41.0, -9.0), (11.0, 14.0, 11.0)) + F32(3.5) * s.gyri(qy, qz, qx)
        self.add("wm", full, np.maximum(core, cb + F32(3.5)))  # arbor vitae: branching core of each hemisphere
        # folia: thin fissures roughly parallel to the surface, wandering with a random phase
        period = F32(3.4)
        phase = F32(math.pi / period) * depth + F32(0.9) * s.folia(qx, qy, qz)
        wave = np.abs(np.sin(phase)) * (period / F32(math.pi))
        outside = np.maximum(np.maximum(depth - F32(8.0), -core), F32(1.0) - depth)  # 1-8 mm deep, not in the WM
        self.add("csf", full, np.maximum(wave - F32(0.12), outside))
        self.add("brainstem", full, stem)
        fourth = sd_ellipsoid(qx, qy - bcy + bay + F32(2.6), qz, (0.0, 0.0, -3.0), (5.0, 2.4, 8.5))
        self.add("csf", full, fourth)  # 4th ventricle, behind the pons
        basilar = np.sqrt(qx * qx + (qy - bcy - bay - F32(1.6)) ** 2) - F32(1.5)
        self.add("vessel", full, np.maximum(basilar, qz - F32(20.0)))

    def dura(self) -> None:
        """Tentorium (roof of the posterior fossa, open at the incisura) and falx."""
        x, y, z, full = self.x, self.y, self.z, HeadGrid.FULL
        notch = sd_ellipsoid(x, y, z, (0.0, -5.0, 20.0), (14.0, 34.0, 60.0))
        tentorium = np.maximum(np.abs(z - self.tent_z(x, y)) - F32(0.5), self.sdf_cav)
        self.add("dura", full, np.maximum(tentorium, np.maximum(-notch, self.pf_half(x, y, z))))
        falx = np.maximum(np.abs(x) - F32(0.45), self.sdf_cav)
        self.add("dura", full, np.maximum(falx, np.maximum(-self.pf_region, -self.diencephalon)))

    def skull_base(self) -> None:
        """Skull-base plate, petrous bones (sigmoid sinus, mastoid cells, middle ear, ear canal), clivus."""
        s, g, x, y, z = self.s, self.g, self.x, self.y, self.z
        floor = self.floor_z(x, y)
        plate = np.maximum(z - floor, floor - F32(4.5) - z)
        plate = np.maximum(plate, np.maximum(self.sdf_inner - F32(3.0), -self.pf_half(x, y, z)))
        self.add("bone", HeadGrid.FULL, plate)
        for side, ear in enumerate(s.ears):
            sign = 1.0 if side == 0 else -1.0
            box = g.box((ear.porus + np.array([10.0, 0.0, -10.0])) * _mirror(sign), 45.0)
            if box is None:
                continue
            bx, by, bz = g.points(box)
            u = bx * F32(sign)
            pet = np.maximum(self.petrous(bx, by, bz, ear, sign), self.outer_table[box])
            self.add("bone", box, pet)
            f = ear.fundus
            # sigmoid sinus, in its groove behind the mastoid
            gy = ear.porus[1] - (50.0 - ear.porus[0]) / math.tan(ear.face_angle) - 3.0
            sinus = np.sqrt((u - F32(50.0)) ** 2 + (by - F32(gy)) ** 2) - F32(3.6)
            self.add("vessel", box, np.maximum(sinus, np.abs(bz + F32(8.0)) - F32(22.0)))
            # mastoid air cells: a lattice of pockets in the posterolateral petrous bone
            lattice = sum(np.cos(F32(2 * math.pi / 4.2) * a + F32(p)) for a, p in zip((u, by, bz), s.honeycomb))
            mastoid = sd_ellipsoid(u, by, bz, f + np.array([18.0, -13.0, -4.0]), (10.0, 11.0, 13.0))
            cells = np.maximum(mastoid, (F32(0.4) - lattice) * F32(0.5))
            self.add("air", box, np.maximum(cells, pet))
            middle_ear = sd_ellipsoid(u, by, bz, f + np.array([12.0, 2.0, -0.5]), (3.2, 5.5, 6.5))
            self.add("air", box, middle_ear)
            eac = f + np.array([14.0, 3.0, -4.0])  # external auditory canal, out through the skin
            tube, _ = sd_tube(u, by, bz, eac, eac + np.array([60.0, 1.0, 0.0]), 3.2, 3.6)
            self.add("air", box, np.maximum(tube, -self.sdf_cav[box]))
        box = g.box((0.0, 20.0, -12.0), 34.0)
        if box:
            clivus = self.clivus(*g.points(box))
            self.add("bone", box, clivus)
            self.add("marrow", box, clivus + F32(2.5))

    def face(self) -> None:
        """Orbits (fat, recti, optic nerves, globes, lenses) and the air sinuses."""
        g = self.g
        for sign in (1.0, -1.0):
            c = np.array([sign * 30.0, 56.0, 8.0])
            box = g.box(c, 28.0)
            if box is None:
                continue
            bx, by, bz = g.points(box)
            orbit = sd_ellipsoid(bx, by, bz, c, (14.0, 21.0, 14.0))
            self.add("fat", box, np.maximum(orbit, self.sdf_head[box] + F32(4.0)))
            optic, _ = sd_tube(bx, by, bz, (sign * 28.0, 55.0, 7.5), (sign * 12.0, 30.0, 10.0), 2.0, 1.8)
            self.add("wm", box, optic)
            for dx in (10.0, -10.0):  # medial and lateral recti
                self.add("soft", box, sd_ellipsoid(bx, by, bz, c + np.array([dx, -2.0, 0.0]), (2.2, 13.0, 3.5)))
            globe = (sign * 31.0, 65.0, 8.0)
            self.add("soft", box, sd_ellipsoid(bx, by, bz, globe, (12.6, 12.6, 12.6)))  # sclera
            self.add("vitreous", box, sd_ellipsoid(bx, by, bz, globe, (11.8, 11.8, 11.8)))
            self.add("lens", box, sd_ellipsoid(bx, by, bz, (sign * 31.0, 75.0, 8.0), (4.2, 1.9, 4.2)))
        box = g.box((0.0, 55.0, -10.0), 45.0)
        if box:
            bx, by, bz = g.points(box)
            sphenoid = sd_ellipsoid(bx, by, bz, (0.0, 31.0, -9.0), (12.0, 10.0, 9.0))
            nasal = np.maximum(sd_ellipsoid(bx, by, bz, (0.0, 62.0, -8.0), (10.0, 24.0, 22.0)), F32(1.0) - np.abs(bx))
            maxillary = sd_ellipsoid(np.abs(bx), by, bz, (25.0, 55.0, -31.0), (12.0, 14.0, 12.0))
            sinuses = np.minimum(np.minimum(sphenoid, nasal), maxillary)
            self.add("air", box, np.maximum(sinuses, self.sdf_head[box] + F32(3.0)))

    def inner_ears(self) -> None:
        """IACs (flared CSF tubes) with the VII/VIII nerves to the brainstem; vestibule, canals, cochlea."""
        s, g = self.s, self.g
        for side, ear in enumerate(s.ears):
            sign = 1.0 if side == 0 else -1.0
            box = g.box((ear.porus + np.array([8.0, 0.0, 0.0])) * _mirror(sign), 24.0)
            if box is None:
                continue
            bx, by, bz = g.points(box)
            u = bx * F32(sign)
            iac, t = sd_tube(u, by, bz, ear.porus - 3.0 * ear.iac_dir, ear.fundus, ear.iac_r, ear.iac_r)
            flare = F32(2.2) * (F32(1.0) - smoothstep(0.0, 4.0 / (ear.iac_len + 3.0) + 0.2, t))
            self.add("csf", box, iac - flare)
            stem_point = np.array([s.pons[0] - 2.0, ear.porus[1] - 2.5, ear.porus[2] - 0.5])
            for dy, dz in ((0.75, 0.5), (-0.7, -0.3)):  # VII (antero-superior) and VIII bundles
                a = ear.fundus - 0.3 * ear.iac_dir + np.array([0.0, dy * 0.8, dz * 0.8])
                nerve, _ = sd_tube(u, by, bz, a, stem_point + np.array([0.0, dy * 0.6, dz]), 0.6, 0.75)
                self.add("nerve", box, nerve)
            lab = g.box(ear.cochlea_centre * _mirror(sign), 14.0)
            if lab is None:
                continue
            lx, ly, lz = g.points(lab)
            lu = lx * F32(sign)
            self.add("fluid", lab, sd_ellipsoid(lu, ly, lz, ear.vestibule, (2.4, 1.8, 2.2)))
            a = ear.face_angle
            normals = ((0.0, 0.25, 1.0), (math.cos(a), math.sin(a), 0.0), (-math.sin(a), math.cos(a), 0.0))
            for centre, normal in zip(ear.axis_scc, normals):  # lateral, posterior, superior canals
                self.add("fluid", lab, sd_torus(lu, ly, lz, centre, normal, ear.scc_r, 0.45))
            cochlea = _spiral_sdf(lu, ly, lz, ear.cochlea)
            self.add("fluid", lab, cochlea)
            self.cochleae[side] = (lab, cochlea < 0)

    def tumour(self) -> None:
        """The VS: canal part + lobulated cisternal ball; bone (except the canal), clivus and midline stop it."""
        T, g = self.s.tumour, self.g
        ear, sign = self.s.ears[T.side], T.sign
        t0, t1, rc = T.canal
        centre = (T.centre + ear.porus + ear.iac_dir * 0.5 * t1) / 2
        radius = max(T.reach(), 4.0) + float(np.linalg.norm(T.centre - centre)) + rc + 4.0
        box = g.box(centre * _mirror(sign), radius)
        if box is None:
            return
        bx, by, bz = g.points(box)
        u = bx * F32(sign)
        sdf, _ = sd_tube(u, by, bz, ear.porus + t0 * ear.iac_dir, ear.porus + t1 * ear.iac_dir, rc, rc * 0.9)
        if T.diameter > 0:
            lx, ly, lz = to_local(u, by, bz, T.centre, T.frame)
            ball = sd_ellipsoid(lx, ly, lz, (0.0, 0.0, 0.0), T.radii)
            scale = F32(T.radii[0]) / (np.sqrt(lx * lx + ly * ly + lz * lz) + F32(1e-3))
            ball = ball + F32(T.bump_amp) * T.bumps(lx * scale, ly * scale, lz * scale)  # lobulated surface
            for c, r in T.lobes:
                ball = smin(ball, sd_ellipsoid(u, by, bz, c, (r, r, r)), 0.3 * r)
            sdf = smin(sdf, ball, 2.5)
        canal, _ = sd_tube(u, by, bz, ear.porus - 3.0 * ear.iac_dir, ear.fundus, ear.iac_r, ear.iac_r)
        bone = np.maximum(self.petrous(bx, by, bz, ear, sign), F32(0.6) - canal)  # the canal may widen 0.6 mm
        sdf = np.maximum(np.maximum(sdf, -bone), np.maximum(self.sdf_cav[box], F32(2.5) - u))
        sdf = np.maximum(sdf, F32(0.5) - self.clivus(bx, by, bz))
        self.add("vs", box, sdf, T.texture(bx, by, bz))
        self.vs = (box, sdf < 0)


def build(subject: Subject, grid: HeadGrid, h: float, sink: LayerSink) -> Labels:
    """Send every tissue layer of ``subject`` on ``grid`` (partial-volume ramp ``h`` mm) to ``sink``
    in painting order; return the label masks."""
    return _Scene(subject, grid, h, sink).paint_all()


def _spiral_sdf(u, y, z, line: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """SDF of a tube of varying radius around a sampled centre line (min over the samples)."""
    pts = np.stack([u.ravel(), y.ravel(), z.ravel()], axis=1).astype(F32)
    centres, radii = line[:, :3].astype(F32), line[:, 3].astype(F32)
    out = np.empty(len(pts), F32)
    for start in range(0, len(pts), chunk):
        p = pts[start : start + chunk]
        d2 = ((p[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        out[start : start + chunk] = (np.sqrt(d2) - radii[None, :]).min(axis=1)
    return out.reshape(u.shape)
