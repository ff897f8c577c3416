"""Each recipe for a published preference dataset builds its trainer offline and takes one step: the
recipe's own method, preset and settings, on a tiny model, reading a fixture file of the dataset's
published schema (tests/data/fixtures/presets) in place of the Hub copy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tests.cli.conftest import RECIPES

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "presets"
# recipe folder -> the fixture of the same schema
FIXTURE_OF = {
    "lastfm": "sdpo.json",
    "ultrafeedback": "ultrafeedback.jsonl",
    "nectar": "nectar.jsonl",
    "ultrafeedback_binarized": "ultrafeedback_binarized.jsonl",
    "pku_saferlhf": "pku_saferlhf.jsonl",
    "hh_harmless": "hh_rlhf.jsonl",
}
REAL = sorted(p for folder in FIXTURE_OF for p in (RECIPES / folder).glob("*.yaml"))
# What a CPU test changes: the model (a tiny one whose tokenizer is trained on the fixture), the data
# file, the length of the run, and what needs a GPU (bf16, 4-bit). Everything else is the recipe's.
CPU_OVERRIDES = {
    "model_name_or_path": "synthetic:tiny?vocab_size=400",
    "dtype": "float32",
    "bf16": False,
    "load_in_4bit": False,
    "max_steps": 1,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "save_strategy": "no",
    "logging_steps": 1,
    "disable_tqdm": True,
}


def test_every_dataset_has_lora_and_full_recipes():
    stems = {(p.parent.name, p.stem) for p in REAL}
    assert len(REAL) == 16
    for folder, stem in stems:
        other = stem.replace("_lora", "_full") if stem.endswith("_lora") else stem.replace("_full", "_lora")
        assert (folder, other) in stems


def _one_step(path: Path, tmp_path: Path) -> dict:
    from alignkit.launch.recipe import load_recipe
    from alignkit.launch.runner import build

    data = yaml.safe_load(path.read_text())
    overrides = {**CPU_OVERRIDES, "train_dataset": str(FIXTURES / FIXTURE_OF[path.parent.name])}
    overrides["output_dir"] = str(tmp_path / "run")
    if data["method"] == "d2o":  # sampling K replies of 256 tokens is the GPU part
        overrides.update(num_samples=2, sample_max_new_tokens=4)
    recipe = load_recipe(path, values=overrides)
    assert recipe.script.dataset_preset == data["dataset_preset"]  # the recipe's preset reads the fixture
    trainer = build(recipe).trainer
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 1 and logs and math.isfinite(logs[0]["loss"])
    return logs[0]


LORA = [p for p in REAL if p.stem.endswith("_lora")]
FULL = [p for p in REAL if p.stem.endswith("_full")]


@pytest.mark.parametrize("path", LORA, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_lora_recipe_takes_a_step_on_its_preset(path, tmp_path):
    _one_step(path, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", FULL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_full_recipe_takes_a_step_on_its_preset(path, tmp_path):
    _one_step(path, tmp_path)
