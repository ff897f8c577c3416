"""EM and ES against the spec's vectors (methods-unlearning-2.md §8.2-§8.3), OU's 1/n floor included."""

from __future__ import annotations

import pytest

from alignkit.eval.memorization import (
    exact_memorization,
    exact_memorization_value,
    extraction_strength,
    extraction_strength_value,
    token_set,
)

LABELS = [5, 7, 7, 2, 9]
# predictions, EM, ES (OU floor), ES (strict)
VECTORS = {
    "partial": ([5, 1, 7, 2, 9], 0.8, 0.6, 0.6),
    "none": ([3, 3, 3, 3, 3], 0.0, 0.2, 0.0),
    "last": ([3, 3, 3, 3, 9], 0.2, 0.2, 0.2),
    "all": ([5, 7, 7, 2, 9], 1.0, 1.0, 1.0),
}


@pytest.mark.parametrize("case", VECTORS)
def test_per_item_values(case):
    preds, em, es_ou, es_strict = VECTORS[case]
    assert exact_memorization_value(preds, LABELS) == pytest.approx(em, abs=1e-12)
    assert extraction_strength_value(preds, LABELS, floor="ou") == pytest.approx(es_ou, abs=1e-12)
    assert extraction_strength_value(preds, LABELS, floor="strict") == pytest.approx(es_strict, abs=1e-12)


def test_aggregates_and_the_empty_item():
    items = {str(i): (VECTORS[c][0], LABELS) for i, c in enumerate(("partial", "none", "all"))}
    items["3"] = ([], [])  # no target token left
    es = extraction_strength(items)
    em = exact_memorization(items)
    assert es["agg_value"] == pytest.approx(0.45, abs=1e-12)  # mean(0.6, 0.2, 1.0, 0): OU counts it as 0
    assert es["value_by_index"]["3"] == {"score": 0.0}
    assert es["es_floor"] == "ou"
    assert em["agg_value"] == pytest.approx(0.6, abs=1e-12)  # mean(0.8, 0.0, 1.0): None is left out
    assert em["value_by_index"]["3"] == {"score": None}
    strict = extraction_strength(items, floor="strict")
    assert strict["agg_value"] == pytest.approx((0.6 + 0.0 + 1.0) / 3, abs=1e-12)
    assert strict["value_by_index"]["3"] == {"score": None}


def test_token_set_drops_the_last_scored_token():
    # TOFU answer a1..a5 + EOS: the EOS prediction never counts, even when it is wrong.
    targets = [11, 12, 13, 14, 15, 2]
    preds = [11, 12, 13, 14, 15, 99]
    p, t = token_set(preds, targets)
    assert (p, t) == ([11, 12, 13, 14, 15], [11, 12, 13, 14, 15])
    assert extraction_strength_value(p, t) == 1.0
    assert token_set([4], [4]) == ([], [])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="`es_floor` must be one of"):
        extraction_strength_value([1], [1], floor="carlini")
    with pytest.raises(ValueError, match="2 predictions for 3 targets"):
        exact_memorization_value([1, 2], [1, 2, 3])
