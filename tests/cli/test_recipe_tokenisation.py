"""The TOFU and MUSE recipes tokenise the way open-unlearning trains and scores (issue 11 §4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
BENCHMARK_RECIPES = sorted([*RECIPES.glob("tofu/**/*.yaml"), *RECIPES.glob("muse_news/*.yaml")])


def test_there_are_benchmark_recipes():
    assert len(BENCHMARK_RECIPES) > 40


@pytest.mark.parametrize("path", BENCHMARK_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_benchmark_recipe_tokenises_jointly_and_says_so(path):
    text = path.read_text()
    assert yaml.safe_load(text)["boundary"] == "joint"
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("Tokenisation: joint" in line for line in header)
