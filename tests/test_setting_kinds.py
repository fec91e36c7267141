"""Every config setting is declared as changing results or only how a stage runs; keys read folder contents."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from tanq_ray.config import Config
from tanq_ray.setting_kinds import CHANGES_HOW_IT_RUNS, CHANGES_RESULTS, folder_fingerprint, kind_of, result_settings


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config model, walking nested models (not values: a field unset by default counts)."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_setting_has_a_kind_and_only_one() -> None:
    keys = _leaf_keys(Config)
    assert len(keys) > 80 and "models.tanq.encoder_norm" in keys and "segment.views" in keys
    unnamed = [key for key in keys if kind_of(key) is None]
    assert not unnamed, f"declare each in tanq_ray/setting_kinds.py as changing results or how it runs: {unnamed}"
    both = [key for key in keys if any(key == n or key.startswith(n + ".") for n in CHANGES_RESULTS)
            and any(key == n or key.startswith(n + ".") for n in CHANGES_HOW_IT_RUNS)]  # fmt: skip
    assert not both, both
    stale = [name for name in CHANGES_RESULTS | CHANGES_HOW_IT_RUNS if not any(k == name or k.startswith(name + ".") for k in keys)]
    assert not stale, f"names that are no setting any more: {stale}"


def test_result_settings_leave_out_how_it_runs() -> None:
    config = Config()
    segment = result_settings(config, "segment")
    assert "segment.epochs" in segment and "segment.max_parallel_folds" not in segment and "segment.fold_retries" not in segment
    assert "train.model" not in result_settings(config, "train")


def test_a_folder_fingerprint_changes_with_its_files(tmp_path: Path) -> None:
    (tmp_path / "a_ceT1.nii.gz").write_bytes(b"x")
    first = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == first
    (tmp_path / "b_hrT2.nii.gz").write_bytes(b"y")
    added = folder_fingerprint(tmp_path)
    os.utime(tmp_path / "a_ceT1.nii.gz", ns=(1, 1))
    assert len({first, added, folder_fingerprint(tmp_path)}) == 3
    assert folder_fingerprint(None) is None and folder_fingerprint(tmp_path / "nowhere") == "missing"
