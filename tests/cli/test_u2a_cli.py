"""U2A from `alignkit train`: `u2a: true` and its `u2a_*` keys on GA, GradDiff and NPO recipes."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_recipe_values
from test_user_errors import one_error_line

FORGET = "synthetic:planted_negatives?part=forget&num_prompts=8&num_validation=4"
VALIDATION = "synthetic:planted_negatives?part=validation&num_prompts=8&num_validation=4"


def u2a_recipe(make_recipe, tmp_path, method="npo", **values):
    settings = tiny_recipe_values(
        tmp_path,
        method=method,
        train_dataset=FORGET,
        u2a=True,
        u2a_validation_dataset=VALIDATION,
        u2a_top_k=4,
        u2a_refresh_every=1,
    )
    return make_recipe(tmp_path / "u2a.yaml", **{**settings, **values})


def test_train_runs_u2a_from_the_recipe(cli, make_recipe, tmp_path):
    code, out = cli("train", u2a_recipe(make_recipe, tmp_path))
    assert code == 0, out
    run = tmp_path / "run"
    refreshes = [json.loads(line) for line in (run / "u2a_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in refreshes] == [0, 1]
    assert all(r["kept"] == 4 and len(r["weights"]) == 4 for r in refreshes)
    info = json.loads((run / "run_info.json").read_text())
    assert info["trainer"] == "U2ANPOTrainer"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"u2a_validation_dataset": None}, "`u2a: true` needs `u2a_validation_dataset`"),
        ({"u2a": False}, "`u2a_validation_dataset` is set but `u2a` is false"),
        ({"u2a_top_k": 0}, "`u2a_top_k` must be >= 1 or null, got 0"),
        ({"u2a_weight_update": "upstream"}, "`u2a_weight_update` must be one of"),
        ({"u2a_grad_params": "(lora"}, "`u2a_grad_params` is not a valid regex"),
        ({"method": "simnpo"}, "u2a"),
    ],
)
def test_u2a_mistakes_are_one_line(cli, make_recipe, tmp_path, values, message):
    code, out = cli("train", u2a_recipe(make_recipe, tmp_path, **values))
    assert code == 2, out
    assert message in one_error_line(out)
