from pathlib import Path

import pytest

from tanq_ray.data.layout import LayoutError, scan_folder, site_of


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_scan_pairs_images_with_labels(tmp_path: Path) -> None:
    touch(tmp_path, "crossmoda2022_ldn_1_ceT1.nii.gz", "crossmoda2022_ldn_1_Label.nii.gz", "crossmoda2022_etz_7_hrT2.nii.gz")
    volumes = scan_folder(tmp_path)
    assert [(v.key, v.site, v.label is not None) for v in volumes] == [
        ("crossmoda2022_etz_7_hrT2", "etz", False),
        ("crossmoda2022_ldn_1_ceT1", "ldn", True),
    ]


def test_hidden_files_and_folders_are_ignored(tmp_path: Path) -> None:
    touch(tmp_path, "crossmoda2022_etz_7_hrT2.nii.gz", ".DS_Store")
    (tmp_path / "sub").mkdir()
    assert len(scan_folder(tmp_path)) == 1


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([], "holds no"),
        (["crossmoda2022_ldn_1_ceT1.nii.gz"], r"crossmoda2022_ldn_1_ceT1\.nii\.gz' has no label"),
        (["crossmoda2022_ldn_1_Label.nii.gz"], r"crossmoda2022_ldn_1_Label\.nii\.gz' has no image"),
        (["crossmoda2022_ldn_1_T1.nii.gz", "notes.txt"], r"crossmoda2022_ldn_1_T1\.nii\.gz.*notes\.txt"),
    ],
)
def test_layout_errors_name_the_files(tmp_path: Path, names: list[str], message: str) -> None:
    touch(tmp_path, *names)
    with pytest.raises(LayoutError, match=message):
        scan_folder(tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="does not exist"):
        scan_folder(tmp_path / "absent")


def test_site_of() -> None:
    assert site_of("crossmoda2022_etz_12") == "etz"
    assert site_of("case12") == "unknown"
