"""The stale torch-extension build lock check that keeps a DeepSpeed launch from hanging in silence
(the real launch is tests/distributed/test_launch.py)."""

from __future__ import annotations

import os
import time

import pytest

from alignkit.launch.build_locks import stale_build_locks
from alignkit.launch.recipe import RecipeError
from alignkit.launch.runner import check_build_locks


def lock_at(path, age_s: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path, (time.time() - age_s,) * 2)
    return path


def test_only_old_locks_one_or_two_folders_down_are_stale(tmp_path):
    old_op = lock_at(tmp_path / "deepspeed_shm_comm" / "lock", 3600)
    old_nested = lock_at(tmp_path / "py311_cpu" / "cpu_adam" / "lock", 7200)
    lock_at(tmp_path / "fused_adam" / "lock", 30)  # a build running now
    lock_at(tmp_path / "a" / "b" / "c" / "lock", 7200)  # not where torch builds
    assert stale_build_locks(tmp_path) == sorted([old_op, old_nested])
    assert stale_build_locks(tmp_path / "absent") == []


def test_a_deepspeed_launch_refuses_a_stale_lock_and_others_ignore_it(tmp_path, monkeypatch):
    lock = lock_at(tmp_path / "deepspeed_shm_comm" / "lock", 5400)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    check_build_locks()  # not a DeepSpeed run: nothing waits on the lock
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(RecipeError) as err:
        check_build_locks()
    message = str(err.value)
    assert "\n" not in message and f"rm {lock}" in message and "1.5 h ago" in message
    lock.unlink()
    check_build_locks()
