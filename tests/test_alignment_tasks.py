"""Each synthetic alignment task has room to learn: one short preference run from the SFT model beats
it on the exact score of greedy answers to held-out prompts, without collapsing the answer format.

The quickstart's settings and seed 0 (`alignkit.quickstart_alignment`); the seed spread is in
docs/results.md.
"""

from __future__ import annotations

import pytest

from alignkit.quickstart import _fit
from alignkit.quickstart_alignment import TASKS, AlignmentSettings, prepare_alignment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    s = AlignmentSettings(seed=0)

    def fit(method, model_path, rows, out_dir, **config):
        return _fit(method, model_path, rows, out_dir, seed=s.seed, **config)

    return prepare_alignment(
        tmp_path_factory.mktemp("tasks"), s, lambda _m: None, lambda _n, f: f(), fit, None
    )


@pytest.mark.parametrize("task", ["recommendation", "graded_list", "safety"])
def test_preference_training_beats_sft_on_greedy_answers(ctx, task):
    models = TASKS[task](ctx)
    sft = models.pop("sft")
    for name, summary in models.items():
        assert summary["generation_score"] > sft["generation_score"], (name, summary, sft)
        assert summary["valid_ratio"] >= 0.8 * sft["valid_ratio"], (name, summary, sft)
