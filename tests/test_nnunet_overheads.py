"""How nnUNet's steps use processes: prediction tasks per free device, planning pools in the task's process, one worker environment."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from tanq_ray.segment.folders import AUGMENTATION_VARIABLE, NnUNetFolders, augmentation_processes
from tanq_ray.segment.planning import CASES_PER_PROCESS, planning_processes, pools_in_this_process
from tanq_ray.segment.predict import MIN_VOLUMES_PER_TASK, task_chunks


def _sizes(chunks: list[list[int]]) -> list[int]:
    return [len(chunk) for chunk in chunks]


def test_prediction_takes_one_task_per_free_device_of_at_least_four_volumes() -> None:
    volumes = list(range(12))
    assert _sizes(task_chunks(volumes, None, free_devices=1)) == [12]  # a busy 2-core machine: one worker start
    assert _sizes(task_chunks(volumes, None, free_devices=0)) == [12]
    assert _sizes(task_chunks(volumes, None, free_devices=2)) == [6, 6]
    assert _sizes(task_chunks(volumes, None, free_devices=16)) == [4, 4, 4]
    assert all(len(c) >= MIN_VOLUMES_PER_TASK for c in task_chunks(list(range(9)), None, free_devices=16))
    assert _sizes(task_chunks([7], None, free_devices=8)) == [1]
    assert sorted(v for chunk in task_chunks(volumes, None, free_devices=3) for v in chunk) == volumes


def test_an_explicit_chunk_size_is_kept() -> None:
    assert _sizes(task_chunks(list(range(9)), 4, free_devices=0)) == [4, 4, 1]
    assert _sizes(task_chunks(list(range(9)), 1, free_devices=0)) == [1] * 9


def test_planning_uses_one_process_for_a_small_cohort_and_more_for_a_large_one() -> None:
    assert planning_processes(36, free_cpus=2) == 1
    assert planning_processes(CASES_PER_PROCESS * 4, free_cpus=2) == 2
    assert planning_processes(CASES_PER_PROCESS * 4, free_cpus=8) == 4
    assert planning_processes(500, free_cpus=0) == 1


def _where(value: int) -> tuple[int, int]:
    return os.getpid(), value * value


def _fail(value: int) -> int:
    raise ValueError(f"case {value} is broken")


def test_spawn_pools_run_in_this_process_while_open_and_spawn_again_after() -> None:
    with pools_in_this_process():
        with multiprocessing.get_context("spawn").Pool(4) as pool:  # as nnUNet opens its pools
            assert all(worker.is_alive() for worker in pool._pool)  # nnUNet checks its workers so
            results = pool.starmap_async(_where, [(2,), (3,)]).get()
        assert results == [(os.getpid(), 4), (os.getpid(), 9)]
        assert multiprocessing.get_context("fork").get_start_method() == "fork"  # other methods untouched
        with multiprocessing.get_context("spawn").Pool(1) as pool, pytest.raises(ValueError, match="case 5 is broken"):
            pool.starmap(_fail, [(5,)])
    assert multiprocessing.get_context("spawn").get_start_method() == "spawn"


def test_every_nnunet_step_of_a_folder_gets_one_environment_so_ray_can_reuse_its_worker(tmp_path) -> None:
    folders = NnUNetFolders(tmp_path, "Dataset501_TanqVS")
    env = folders.runtime_env(use_gpu=False)["env_vars"]
    assert env["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")
    assert AUGMENTATION_VARIABLE not in env  # set inside the fold task instead


def test_augmentation_processes_are_set_for_a_fold_and_restored_after(monkeypatch) -> None:
    monkeypatch.delenv(AUGMENTATION_VARIABLE, raising=False)
    with augmentation_processes(0):
        assert os.environ[AUGMENTATION_VARIABLE] == "0"
    assert AUGMENTATION_VARIABLE not in os.environ  # a planning task in the same worker sees nnUNet's default
    monkeypatch.setenv(AUGMENTATION_VARIABLE, "3")
    with pytest.raises(RuntimeError), augmentation_processes(1):
        assert os.environ[AUGMENTATION_VARIABLE] == "1"
        raise RuntimeError("the fold failed")
    assert os.environ[AUGMENTATION_VARIABLE] == "3"
