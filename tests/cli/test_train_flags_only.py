"""``alignkit train`` with the whole recipe as flags (no recipe file), as TrlParser users expect."""

from __future__ import annotations

import json
import math

import pytest

from alignkit.launch.recipe import RESOLVED_RECIPE, load_recipe

TINY = "synthetic:tiny?vocab_size=400"
FORGET = "synthetic:tofu?num_people=20&split=forget10"


def test_a_recipe_given_only_as_flags_trains(cli, tmp_path):
    run = tmp_path / "run"
    code, out = cli(
        "train",
        "--model_name_or_path",
        TINY,
        "--method",
        "npo",
        "--train_dataset",
        FORGET,
        "--output_dir",
        run,
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--beta",
        "0.2",
    )
    assert code == 0, out
    info = json.loads((run / "run_info.json").read_text())
    assert info["method"] == "npo" and info["hyperparameters"]["beta"] == 0.2
    assert info["datasets"]["train"]["rows"] == 20
    assert info["lm_head"] == "off (auto: device cpu, the fused head is slower off CUDA/XPU)"  # which path ran
    assert info["train"]["loss_curve"][0][1] == pytest.approx(2 / 0.2 * math.log(2), rel=1e-5)  # NPO at init
    resolved = load_recipe(run / RESOLVED_RECIPE)  # the flags became a recipe that re-runs the same run
    assert resolved.script.train_dataset == FORGET and resolved.training.beta == 0.2


def test_flags_without_a_method_name_the_fix(cli):
    code, out = cli("train", "--model_name_or_path", TINY, "--train_dataset", FORGET)
    assert code == 2 and "no recipe given" in out and "--method NAME --model_name_or_path" in out


def test_a_recipe_file_still_comes_first(cli, recipe_file):
    code, out = cli("train", "--method", "npo", recipe_file, "--max_steps", "1")
    assert code == 0, out
