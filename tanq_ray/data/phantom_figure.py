"""The README picture of the phantom cohort (``docs/phantom.png``).

Top row: an axial slice through the IAC/cochlea level of a labelled ceT1 and of an
evaluation hrT2 (another subject, the other site when there is one), with the label
contours (VS red, cochlea sky-blue). Bottom row: 50 mm zooms on the VS and its
cochlea. Slices are reoriented to RAS+ and resampled to square display pixels, shown
in radiological convention (subject's right on the left, anterior up).

Regenerate with ``python -m tanq_ray.data.phantom_figure docs/phantom.png`` (a fresh cohort
at size 256, twice the default matrix, so the anatomy reads at README scale).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from tanq_ray.data.phantom import SUMMARY_NAME, Cohort, generate_cohort
from tanq_ray.labels import COCHLEA, VS
from tanq_ray.visuals import draw_contours, grid, save_png, to_rgb

FULL_MM, FULL_PX = 190.0, 320
ZOOM_MM = 50.0


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(image.dataobj, dtype=np.float32), np.asarray(image.header.get_zooms()[:3], float)


def _pick_slice(label: np.ndarray) -> int:
    """Axial slice at the cochlea level: the most cochlea voxels, ties broken by the VS."""
    score = 10_000 * (label == COCHLEA).sum(axis=(0, 1)) + (label == VS).sum(axis=(0, 1))
    return int(np.argmax(score))


def _view(
    image2d: np.ndarray, label2d: np.ndarray, spacing: np.ndarray, centre_mm: np.ndarray, width_mm: float, px: int, window
) -> np.ndarray:
    """Resample a (x, y) RAS slice around ``centre_mm`` (array mm) to px x px, radiological, contours drawn."""
    step = width_mm / px
    offsets = (np.arange(px) - (px - 1) / 2.0) * step
    xs = (centre_mm[0] - offsets) / spacing[0]  # columns: subject's right (high x) first
    ys = (centre_mm[1] - offsets) / spacing[1]  # rows: anterior (high y) first
    rows, cols = np.meshgrid(ys, xs, indexing="ij")
    coords = np.stack([cols, rows])
    img = ndimage.map_coordinates(image2d, coords, order=1, mode="constant", cval=0.0)
    lab = ndimage.map_coordinates(label2d, coords, order=0, mode="constant", cval=0)
    return draw_contours(to_rgb(img, window), lab)


def _panels(image: np.ndarray, label: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = _pick_slice(label)
    img2d, lab2d = image[:, :, k], label[:, :, k]
    head = image > 0.1 * np.percentile(image, 99)
    window = tuple(np.percentile(image[head], [0.5, 99.7]))
    inside = np.argwhere(head[:, :, k])
    centre = (inside.mean(axis=0) if len(inside) else np.array(img2d.shape) / 2.0) * spacing[:2]
    full = _view(img2d, lab2d, spacing, centre, FULL_MM, FULL_PX, window)
    vs = np.argwhere(label == VS)
    coch = np.argwhere(label == COCHLEA)
    if len(vs) and len(coch):
        vs_c = vs.mean(axis=0)
        ipsi = coch[np.sign(coch[:, 0] - coch[:, 0].mean()) == np.sign(vs_c[0] - coch[:, 0].mean())]
        target = ((vs_c + (ipsi.mean(axis=0) if len(ipsi) else vs_c)) / 2.0)[:2] * spacing[:2]
    else:
        target = centre
    zoom = _view(img2d, lab2d, spacing, target, ZOOM_MM, FULL_PX, window)
    return full, zoom


def render_phantom_figure(cohort_or_dir: Cohort | str | Path, path: str | Path) -> Path:
    """Render the 2 x 2 ceT1 / hrT2 figure of a generated cohort to ``path`` (PNG)."""
    root = cohort_or_dir.root if isinstance(cohort_or_dir, Cohort) else Path(cohort_or_dir)
    summary = json.loads((root / SUMMARY_NAME).read_text())
    cases = summary["cases"]
    source = summary["labelled_cases"][0]
    targets = summary["eval_case_ids"] or summary["unlabelled_cases"]
    other_site = [c for c in targets if cases[c]["site"] != cases[source]["site"]]
    target = (other_site or targets)[0]
    tiles = []
    for case in (source, target):
        files = cases[case]["files"]
        image, spacing = _load(root / files["image"])
        label = np.zeros(image.shape, np.uint8)
        if "label" in files:
            label = _load(root / files["label"])[0].astype(np.uint8)
        tiles.append(_panels(image, label, spacing))
    return save_png(grid([[tiles[0][0], tiles[1][0]], [tiles[0][1], tiles[1][1]]], pad=4), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the phantom README figure from a fresh small cohort.")
    parser.add_argument("path", type=Path, nargs="?", default=Path("docs/phantom.png"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cohort = generate_cohort(Path(tmp), cases=1, eval_cases=2, size=args.size, seed=args.seed)
        out = render_phantom_figure(cohort, args.path)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
