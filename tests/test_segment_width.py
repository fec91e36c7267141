"""A CPU-sized nnUNet: the plans file's feature widths narrowed, and restored."""

import json
from pathlib import Path

from tanq_ray.segment.folders import PLANS_NAME, NnUNetFolders
from tanq_ray.segment.planning import set_network_width

PLANNED = {"2d": [32, 64, 128, 256, 512], "3d_fullres": [32, 64, 128, 256, 320, 320]}


def _plans(tmp_path: Path) -> NnUNetFolders:
    folders = NnUNetFolders(tmp_path, "Dataset501_TanqVS")
    folders.preprocessed_dataset.mkdir(parents=True)
    configurations = {
        name: {"architecture": {"arch_kwargs": {"n_stages": len(f), "features_per_stage": f}}, "patch_size": [64, 64]}
        for name, f in PLANNED.items()
    }
    (folders.preprocessed_dataset / f"{PLANS_NAME}.json").write_text(json.dumps({"configurations": configurations}))
    return folders


def _widths(folders: NnUNetFolders) -> dict[str, list[int]]:
    plans = json.loads((folders.preprocessed_dataset / f"{PLANS_NAME}.json").read_text())
    return {name: c["architecture"]["arch_kwargs"]["features_per_stage"] for name, c in plans["configurations"].items()}


def test_width_narrows_every_stage_and_none_restores_the_plan(tmp_path: Path) -> None:
    folders = _plans(tmp_path)
    set_network_width(folders, ["2d", "3d_fullres"], 8)
    assert _widths(folders) == {"2d": [8, 16, 32, 64, 128], "3d_fullres": [8, 16, 32, 64, 128, 256]}
    set_network_width(folders, ["2d"], 64)  # never wider than nnUNet planned
    assert _widths(folders)["2d"] == [32, 64, 128, 256, 512]
    set_network_width(folders, ["3d_fullres"], None)
    assert _widths(folders)["3d_fullres"] == PLANNED["3d_fullres"]
    plans = json.loads((folders.preprocessed_dataset / f"{PLANS_NAME}.json").read_text())
    assert plans["configurations"]["2d"]["patch_size"] == [64, 64]  # nothing else changes
