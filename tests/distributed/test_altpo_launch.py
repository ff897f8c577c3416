"""AltPO's alternates under 2-process DDP (and ZeRO-3) are the ones a single process writes.

The alternates are drawn while the trainer is built, before the engine exists: each rank samples its
shard of the questions and the shards are gathered (under ZeRO-3 from gathered weights). The run
folder's ``altpo_alternates.json`` (rank 0) must hold the same rows under the same key (the key hashes
the weights, so equal keys also show the gathered hash), and the first loss must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_launch import REPO, ddp_launcher, free_port, launch_env

pytestmark = pytest.mark.distributed

RECIPE = (
    "# AltPO 2-process generation parity\n"
    "method: altpo\n"
    "model_name_or_path: 'synthetic:tiny?vocab_size=400'\n"
    "train_dataset: 'synthetic:tofu?num_people=10&split=forget10'\n"
    "num_alternates: 2\nalternate_max_new_tokens: 8\nalternate_batch_size: 3\n"
    "max_steps: 2\nlogging_steps: 1\nlearning_rate: 1.0e-3\nsave_strategy: 'no'\ndisable_tqdm: true\n"
)


def run(root: Path, name: str, launcher: list[str], per_device: int, *extra: str) -> tuple[dict, dict]:
    recipe = root / "altpo.yaml"
    recipe.write_text(RECIPE)
    env = launch_env(root)  # the tiny model is built once; each run has its own draw
    out = root / name / "out"
    cmd = [*launcher, str(recipe), "--output_dir", str(out), "--per_device_train_batch_size", str(per_device)]
    cmd += ["--sample_cache_dir", str(root / name / "samples"), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[:3000]
    stored = json.loads((out / "altpo_alternates.json").read_text())
    return stored, json.loads((out / "run_info.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("altpo_launch")
    stored, info = run(root, "single", [sys.executable, "-m", "alignkit.cli", "train"], 4)
    assert len(stored["rows"]) == 2 * 10  # forget10 of 10 people: 1 person, 10 questions, K = 2
    return root, stored, info


def first_loss(info: dict) -> float:
    return info["train"]["loss_curve"][0][1]


def assert_same(expected: dict, got: dict) -> None:
    assert got["key"] == expected["key"]
    assert got["rows"] == expected["rows"]


def test_ddp_two_processes_write_the_single_process_alternates(single):
    root, expected, info = single
    launcher = ddp_launcher()
    got, got_info = run(root, "ddp", launcher, 2)
    assert got_info["distributed"] == "MULTI_CPU"
    assert_same(expected, got)
    assert first_loss(got_info) == pytest.approx(first_loss(info), rel=1e-4)


def test_zero3_gathers_parameters_to_write_alternates(single):
    root, expected, info = single
    launcher = [sys.executable, "-m", "alignkit.cli", "train"]
    got, got_info = run(
        root, "zero3", launcher, 2,
        "--accelerate_config", "zero3", "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_port", str(free_port()),
    )  # fmt: skip
    assert got_info["distributed"] == "DEEPSPEED"
    assert_same(expected, got)
    assert first_loss(got_info) == pytest.approx(first_loss(info), rel=1e-4)
