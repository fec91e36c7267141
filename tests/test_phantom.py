"""Phantom cohort: layout, labels, contrasts, sites, determinism, caching, figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tanq_ray.data import phantom
from tanq_ray.data.layout import scan_folder
from tanq_ray.data.phantom import CONTRAST, Cohort, CohortFolderError, generate_cohort
from tanq_ray.data.phantom_figure import render_phantom_figure

CASE_ID = re.compile(r"^crossmoda2022_(ldn|etz)_(\d+)$")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    return generate_cohort(tmp_path_factory.mktemp("phantom") / "cohort", cases=4, eval_cases=2, size=96, seed=3)


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    """Data and affine in RAS+ (closest canonical), plus the image as stored."""
    stored = nib.load(str(path))
    canonical = nib.as_closest_canonical(stored)
    return np.asarray(canonical.dataobj), canonical.affine, stored


def _pairs(cohort: Cohort) -> list[tuple[str, Path, Path]]:
    """(modality, image, label) of every labelled ceT1 and every evaluation hrT2."""
    train, held_out, truth = cohort.train_dir, cohort.eval_dir, cohort.eval_labels_dir
    out = [("ceT1", train / f"{c}_ceT1.nii.gz", train / f"{c}_Label.nii.gz") for c in cohort.labelled_cases]
    out += [("hrT2", held_out / f"{c}_hrT2.nii.gz", truth / f"{c}_Label.nii.gz") for c in cohort.eval_case_ids]
    out += [("hrT2", train / f"{c}_hrT2.nii.gz", cohort.train_labels_dir / f"{c}_Label.nii.gz") for c in cohort.unlabelled_cases]
    return out


def _world(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, np.argwhere(mask))


# ----------------------------------------------------------------------------- layout


def test_layout_and_case_naming(cohort: Cohort) -> None:
    assert {p.name for p in cohort.train_dir.iterdir()} == {
        *(f"{c}_{k}.nii.gz" for c in cohort.labelled_cases for k in ("ceT1", "Label")),
        *(f"{c}_hrT2.nii.gz" for c in cohort.unlabelled_cases),
    }
    assert {p.name for p in cohort.eval_dir.iterdir()} == {f"{c}_hrT2.nii.gz" for c in cohort.eval_case_ids}
    assert {p.name for p in cohort.eval_labels_dir.iterdir()} == {f"{c}_Label.nii.gz" for c in cohort.eval_case_ids}
    assert {p.name for p in cohort.train_labels_dir.iterdir()} == {f"{c}_Label.nii.gz" for c in cohort.unlabelled_cases}
    assert (len(cohort.labelled_cases), len(cohort.unlabelled_cases), len(cohort.eval_case_ids)) == (4, 4, 2)

    everyone = cohort.labelled_cases + cohort.unlabelled_cases + cohort.eval_case_ids
    matches = [CASE_ID.match(c) for c in everyone]
    assert all(matches), everyone
    numbers = [int(m.group(2)) for m in matches]  # type: ignore[union-attr]
    assert len(set(numbers)) == len(numbers), "case numbers must be unique over the cohort"
    for group in (cohort.labelled_cases, cohort.unlabelled_cases, cohort.eval_case_ids):
        sites = [c.split("_")[1] for c in group]
        assert sites == ["ldn", "etz"] * (len(group) // 2) + ["ldn"] * (len(group) % 2), "sites alternate"

    volumes = scan_folder(cohort.train_dir)  # the ingest stage's reader accepts the folder
    assert sorted(v.case_id for v in volumes if v.domain == "ceT1" and v.label) == sorted(cohort.labelled_cases)
    assert sorted(v.case_id for v in volumes if v.domain == "hrT2") == sorted(cohort.unlabelled_cases)

    summary = json.loads(cohort.summary_path.read_text())
    assert summary["params"] == {"cases": 4, "eval_cases": 2, "size": 96, "seed": 3}
    assert summary["labelled_cases"] == cohort.labelled_cases and summary["eval_case_ids"] == cohort.eval_case_ids
    assert set(summary["sites"]) == {"ldn", "etz"}
    for case in everyone:
        info = summary["cases"][case]
        assert info["site"] == case.split("_")[1]
        assert all((cohort.root / rel).is_file() for rel in info["files"].values())


def test_domains_are_unpaired(cohort: Cohort) -> None:
    labelled, unlabelled, held_out = map(set, (cohort.labelled_cases, cohort.unlabelled_cases, cohort.eval_case_ids))
    assert not labelled & unlabelled and not labelled & held_out and not unlabelled & held_out
    train_names = {p.name for p in cohort.train_dir.iterdir()}
    assert not any(c in name for c in held_out for name in train_names), "evaluation subjects leak into train/"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cases"):
        generate_cohort(tmp_path, cases=0)
    with pytest.raises(ValueError, match="size"):
        generate_cohort(tmp_path, cases=1, size=8)


# ----------------------------------------------------------------------------- labels and geometry


def test_labels_vs_one_side_cochlea_both_sides_small(cohort: Cohort) -> None:
    for _, image_path, label_path in _pairs(cohort):
        label, affine, stored = _load(label_path)
        assert stored.get_data_dtype() == np.uint8
        assert set(np.unique(label).tolist()) == {0, 1, 2}, label_path.name
        cochlea, vs = _world(label == 2, affine), _world(label == 1, affine)
        mid = (cochlea[:, 0].min() + cochlea[:, 0].max()) / 2.0
        sides = [cochlea[cochlea[:, 0] < mid], cochlea[cochlea[:, 0] >= mid]]
        assert cochlea[:, 0].max() - cochlea[:, 0].min() > 55.0, "one cochlea on each side, ~70-80 mm apart"
        voxel = float(np.prod(nib.affines.voxel_sizes(affine)))
        for side in sides:
            assert 1 <= len(side) <= 250.0 / voxel + 2, f"cochlea should be a few voxels, got {len(side)}"
            assert np.ptp(side, axis=0).max() < 14.0, "a cochlea is < 10 mm across"
        assert np.all(vs[:, 0] < mid) or np.all(vs[:, 0] >= mid), f"VS on both sides in {label_path.name}"
        centre = vs.mean(axis=0)
        near = [np.linalg.norm(s.mean(axis=0) - centre) for s in sides]
        assert min(near) < 30.0 < max(near), "the VS grows from the canal next to its cochlea"


def test_image_and_label_share_grid_and_header(cohort: Cohort) -> None:
    for modality, image_path, label_path in _pairs(cohort):
        image, label = nib.load(str(image_path)), nib.load(str(label_path))
        assert image.shape == label.shape and len(image.shape) == 3
        np.testing.assert_allclose(image.affine, label.affine)
        assert image.get_data_dtype() == np.float32
        for img in (image, label):
            assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
            np.testing.assert_allclose(img.get_qform(), img.affine, atol=1e-4)
            assert img.header.get_xyzt_units()[0] == "mm"
        assert np.isfinite(image.get_fdata()).all() and image.get_fdata().min() >= 0.0


def test_spacing_is_anisotropic(cohort: Cohort) -> None:
    for path in sorted(cohort.train_dir.glob("*_ceT1.nii.gz")) + sorted(cohort.eval_dir.glob("*.nii.gz")):
        sx, sy, sz = nib.affines.voxel_sizes(nib.load(str(path)).affine)
        assert sx == pytest.approx(sy)
        assert abs(sz - sx) / sx > 0.15, f"{path.name}: in-plane {sx:.2f} vs slice {sz:.2f} mm"
        assert 1.0 <= sz <= 1.5


def test_sites_differ_in_spacing_orientation_and_scale(cohort: Cohort) -> None:
    def volume(folder: Path, modality: str, site: str) -> nib.Nifti1Image:
        return nib.load(str(next(folder.glob(f"crossmoda2022_{site}_*_{modality}.nii.gz"))))

    for modality in ("ceT1", "hrT2"):
        ldn, etz = volume(cohort.train_dir, modality, "ldn"), volume(cohort.train_dir, modality, "etz")
        assert nib.aff2axcodes(ldn.affine) == ("R", "A", "S")
        assert nib.aff2axcodes(etz.affine) == ("L", "P", "S")
        assert not np.allclose(nib.affines.voxel_sizes(ldn.affine), nib.affines.voxel_sizes(etz.affine))
        assert ldn.shape != etz.shape
        top_ldn, top_etz = (np.percentile(v.get_fdata(), 99.5) for v in (ldn, etz))
        assert 500 < top_ldn < 2000 and top_etz > 2.0 * top_ldn, (top_ldn, top_etz)
        assert np.all(np.mod(ldn.get_fdata(), 1.0) == 0.0), "London stores integer values"
        assert np.any(np.mod(etz.get_fdata(), 1.0) != 0.0), "Tilburg stores floats"


# ----------------------------------------------------------------------------- contrast


def _tissue_levels(image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> tuple[float, float]:
    """(brain tissue, brightest) levels within 40 mm of the VS, labelled voxels left out.

    brightest = the region's 99th percentile (CSF in hrT2, fat/vessels in ceT1);
    tissue = median of the region's voxels between 15 % and 75 % of it, which leaves
    out bone, air and fluid (hrT2) or fat (ceT1): what remains is mostly brain.
    """
    distance = ndimage.distance_transform_edt(label != 1, sampling=nib.affines.voxel_sizes(affine))
    region = image[(distance < 40.0) & (label == 0)]
    bright = float(np.percentile(region, 99))
    return float(np.median(region[(region > 0.15 * bright) & (region < 0.75 * bright)])), bright


def test_ceT1_contrast_vs_bright_cochlea_dark(cohort: Cohort) -> None:
    for modality, image_path, label_path in _pairs(cohort):
        if modality != "ceT1":
            continue
        image, affine, _ = _load(image_path)
        label = _load(label_path)[0]
        tissue, _ = _tissue_levels(image, label, affine)
        vs, cochlea = image[label == 1].mean(), image[label == 2].mean()
        assert vs > 1.5 * tissue, f"{image_path.name}: enhancing VS {vs:.0f} vs tissue {tissue:.0f}"
        assert cochlea < 0.5 * tissue, f"{image_path.name}: cochlea {cochlea:.0f} vs tissue {tissue:.0f}"


def test_hrT2_contrast_fluid_bright_vs_between_tissue_and_fluid(cohort: Cohort) -> None:
    for modality, image_path, label_path in _pairs(cohort):
        if modality != "hrT2":
            continue
        image, affine, _ = _load(image_path)
        label = _load(label_path)[0]  # eval_labels: the truth for the evaluation hrT2
        tissue, csf = _tissue_levels(image, label, affine)
        gap = csf - tissue
        vs, cochlea = image[label == 1].mean(), image[label == 2].mean()
        assert csf > 2.0 * tissue, f"{image_path.name}: CSF {csf:.0f} should be far above tissue {tissue:.0f}"
        assert cochlea > 1.3 * tissue, f"{image_path.name}: cochlea {cochlea:.0f}, tissue {tissue:.0f}"
        assert 0.1 * gap < vs - tissue < 0.6 * gap, (
            f"{image_path.name}: VS {vs:.0f} should be above tissue {tissue:.0f} and well below CSF {csf:.0f}"
        )


def test_contrast_table_and_its_documentation_agree() -> None:
    for name in ("ceT1", "hrT2"):
        table = CONTRAST[name]
        assert set(table) == set(phantom.TISSUES)
    t1, t2 = CONTRAST["ceT1"], CONTRAST["hrT2"]
    assert t1["wm"] > t1["gm"] and t2["wm"] < t2["gm"]
    assert t1["vs"] > t1["wm"] > t1["csf"] and t2["csf"] > t2["vs"] > t2["wm"]
    cell = r"(\w+)\s+(\d\.\d\d)\s+(\d\.\d\d)"
    rows = re.findall(rf"^\s+{cell}(?:\s+{cell})?$", phantom.__doc__ or "", re.M)
    documented = {}
    for row in rows:
        documented[row[0]] = (float(row[1]), float(row[2]))
        if row[3]:
            documented[row[3]] = (float(row[4]), float(row[5]))
    assert documented == {t: (t1[t], t2[t]) for t in phantom.TISSUES}


# ----------------------------------------------------------------------------- determinism and reruns


def _arrays(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(nib.load(str(p)).dataobj) for p in sorted(root.rglob("*.nii.gz"))}


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    seeds = {"a": 5, "b": 5, "c": 6}
    runs = {n: generate_cohort(tmp_path / n, cases=1, eval_cases=1, size=48, seed=seed) for n, seed in seeds.items()}
    a, b, c = (_arrays(runs[n].root) for n in "abc")
    assert a.keys() == b.keys() == c.keys() and len(a) == 6
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert all(not np.array_equal(a[k], c[k]) for k in a if "Label" not in k)


def test_a_case_does_not_depend_on_cohort_size(tmp_path: Path) -> None:
    small = generate_cohort(tmp_path / "small", cases=1, eval_cases=1, size=48, seed=2)
    large = generate_cohort(tmp_path / "large", cases=2, eval_cases=1, size=48, seed=2)
    first = small.labelled_cases[0]
    assert first == large.labelled_cases[0]
    for kind in ("ceT1", "Label"):
        s, l = (np.asarray(nib.load(str(c.train_dir / f"{first}_{kind}.nii.gz")).dataobj) for c in (small, large))
        np.testing.assert_array_equal(s, l)
    # the evaluation subject is renumbered (numbers are unique over the cohort) but is the same subject
    s, l = (np.asarray(nib.load(str(c.eval_dir / f"{c.eval_case_ids[0]}_hrT2.nii.gz")).dataobj) for c in (small, large))
    np.testing.assert_array_equal(s, l)


def test_rerun_keeps_a_complete_cohort_and_replaces_an_other_one(tmp_path: Path) -> None:
    first = generate_cohort(tmp_path, cases=2, eval_cases=1, size=48)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nii.gz")}
    again = generate_cohort(tmp_path, cases=2, eval_cases=1, size=48)
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nii.gz")} == stamps, "complete cohort rewritten"

    smaller = generate_cohort(tmp_path, cases=1, eval_cases=1, size=48)
    names = {p.name for p in tmp_path.rglob("*.nii.gz")}
    expected = {f"{c}_{k}.nii.gz" for c in smaller.labelled_cases for k in ("ceT1", "Label")}
    expected |= {f"{c}_hrT2.nii.gz" for c in smaller.unlabelled_cases + smaller.eval_case_ids}
    expected |= {f"{c}_Label.nii.gz" for c in smaller.unlabelled_cases + smaller.eval_case_ids}
    assert names == expected, "files of the earlier cohort must not linger"
    assert not list(tmp_path.rglob(".tmp-*")), "no temporary files left behind"


def test_an_interrupted_cohort_is_finished_by_the_next_run(tmp_path: Path) -> None:
    calls = 0

    def interrupt(done: int, total: int, volume: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_cohort(tmp_path, cases=2, eval_cases=1, size=48, progress=interrupt)
    cohort = generate_cohort(tmp_path, cases=2, eval_cases=1, size=48)  # its own half-written files are rewritten
    assert len(list(tmp_path.rglob("*.nii.gz"))) == 10 and len(cohort.eval_case_ids) == 1


def test_files_the_phantom_did_not_write_are_never_overwritten(tmp_path: Path) -> None:
    real = tmp_path / "train" / "crossmoda2022_ldn_1_ceT1.nii.gz"  # a real scan with a CrossMoDA name
    real.parent.mkdir()
    real.write_bytes(b"a real scan")
    with pytest.raises(CohortFolderError, match="crossmoda2022_ldn_1_ceT1.nii.gz.*refusing to overwrite"):
        generate_cohort(tmp_path, cases=1, eval_cases=0, size=48)
    assert real.read_bytes() == b"a real scan" and not (tmp_path / "cohort.json").exists()


@pytest.mark.parametrize("listed", ["train/../../outside.nii.gz", "/etc/outside.nii.gz", "notes/outside.nii.gz"])
def test_a_cohort_json_that_points_outside_the_cohort_is_refused(tmp_path: Path, listed: str) -> None:
    root = tmp_path / "cohort"
    root.mkdir()
    outside = tmp_path / "outside.nii.gz"
    outside.write_bytes(b"keep me")
    (root / "cohort.json").write_text(json.dumps({"version": 0, "cases": {"x": {"files": {"image": listed}}}}))
    with pytest.raises(CohortFolderError, match="refusing to write or delete it"):
        generate_cohort(root, cases=1, eval_cases=0, size=48)
    assert outside.read_bytes() == b"keep me"


# ----------------------------------------------------------------------------- figure


def test_figure_renders(cohort: Cohort, tmp_path: Path) -> None:
    from matplotlib.image import imread

    path = render_phantom_figure(cohort, tmp_path / "phantom.png")
    picture = imread(path)
    assert picture.shape[0] > 500 and picture.shape[1] > 500
    assert path.stat().st_size < 300_000
    colours = (picture[..., :3] * 255).round().astype(int).reshape(-1, 3)
    for colour in ((230, 40, 40), (80, 200, 255)):  # VS and cochlea contours are drawn
        assert (np.abs(colours - colour).sum(axis=1) == 0).any()


def test_readme_picture_is_committed_and_small() -> None:
    picture = REPO / "docs" / "phantom.png"
    assert picture.is_file() and picture.stat().st_size < 300_000
