"""The generated finetune recipes build a target whose Model Utility can be non-zero.

Model Utility is the harmonic mean of Prob, ROUGE and Truth Ratio on Retain, Real Authors and
World Facts; a tiny model trained only on the generated people never learns the general facts, so
their ROUGE (and with it MU) was 0 for every model built from the recipes. The recipes now train on
the general facts too, as the quickstart does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.launch.recipe import load_recipe
from alignkit.launch.runner import load_datasets
from alignkit.launch.sources import local_files

GENERATED = Path(__file__).resolve().parents[2] / "recipes" / "generated_tofu"


@pytest.mark.parametrize("name", ["finetune_full", "finetune_retain90"])
def test_finetune_recipes_train_on_every_general_fact(name, cache_dir):
    recipe = load_recipe(GENERATED / f"{name}.yaml", set_env=False)
    train = load_datasets(recipe)["train"]
    files = Path(local_files(recipe.script.train_dataset))
    questions = set(train["question"])
    for general in ("real_authors", "world_facts"):
        rows = [json.loads(line) for line in (files / f"{general}.json").read_text().splitlines()]
        assert rows and {r["question"] for r in rows} <= questions, general
    people = "full" if name == "finetune_full" else "retain90"
    own = [json.loads(line) for line in (files / f"{people}.json").read_text().splitlines()]
    assert len(train) == len(own) + 48 and {r["question"] for r in own} <= questions


@pytest.mark.slow
def test_brief_target_training_gives_every_model_utility_component(cli, tmp_path):
    """150 steps of finetune_full.yaml (lr 1e-2, batch 16; the recipe runs 930 at 3e-3), then TOFU
    on the generated benchmark: every Model Utility component, ROUGE on the general facts included,
    is non-zero (measured: MU 0.34; RA/WF ROUGE 0.125 on 8 items)."""
    from alignkit.eval import OPEN_UNLEARNING, evaluate_tofu
    from alignkit.eval.metrics import MODEL_UTILITY_COMPONENTS

    out = tmp_path / "target"
    code, text = cli(
        "train", GENERATED / "finetune_full.yaml", "--max_steps", "150", "--learning_rate", "1e-2",
        "--per_device_train_batch_size", "16", "--output_dir", out, "--disable_tqdm", "true",
    )  # fmt: skip
    assert code == 0, text
    data = json.loads((out / "run_info.json").read_text())["datasets"]["train"]["files"]
    result = evaluate_tofu(
        str(out),
        data=data,
        forget_split="forget10",
        protocol=OPEN_UNLEARNING.replace(max_new_tokens=24),
        max_examples=8,
        progress=False,
        output_dir=tmp_path / "eval",
    )
    components = {name: result.summary[name] for name in MODEL_UTILITY_COMPONENTS}
    assert all(value > 0 for value in components.values()), components
    assert result.summary["model_utility"] > 0
