"""The truth ratio's two forms: exact (log space) and open-unlearning's ``p̄_w / (p̄_c + 1e-10)``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignkit.eval import metrics as M

# A collapsed model: the correct answer's per-token probability is ~1e-11, below OU's epsilon.
COLLAPSED_CORRECT = 25.0  # avg loss -> p̄_c = exp(-25) = 1.39e-11
COLLAPSED_WRONG = [20.0, 21.0, 22.0]  # geometric p̄_w = exp(-21)


def test_collapsed_item_follows_open_unlearning():
    ou = M.truth_ratio_value(COLLAPSED_CORRECT, COLLAPSED_WRONG, form="ou_epsilon")
    exact = M.truth_ratio_value(COLLAPSED_CORRECT, COLLAPSED_WRONG, form="exact")
    # OU's evaluator on these losses (truth_ratio in src/evals/metrics/memorization.py, float64 numpy).
    wrong_prob = np.exp(-np.mean(np.asarray(COLLAPSED_WRONG)))
    correct_prob = np.exp(-COLLAPSED_CORRECT)
    assert ou == pytest.approx(float(wrong_prob / (correct_prob + 1e-10)), rel=1e-12)
    assert exact == pytest.approx(math.exp(4.0), rel=1e-12)
    assert ou == pytest.approx(6.6, rel=0.01)  # the epsilon dominates: 7.6e-10 / 1.14e-10, not e^4 = 54.6
    # Far from collapse the two forms agree to the epsilon's relative size.
    healthy = M.truth_ratio_value(0.5, [1.0, 1.5], form="ou_epsilon")
    assert healthy == pytest.approx(M.truth_ratio_value(0.5, [1.0, 1.5]), rel=1e-9)


def test_forms_reach_the_aggregate():
    correct = {0: COLLAPSED_CORRECT, 1: 0.5}
    wrong = {0: COLLAPSED_WRONG, 1: [1.0, 1.5]}
    ou = M.truth_ratio(correct, wrong, aggregator="closer_to_1_better", form="ou_epsilon")
    exact = M.truth_ratio(correct, wrong, aggregator="closer_to_1_better", form="exact")
    r_ou = [ou["value_by_index"][i]["score"] for i in (0, 1)]
    assert ou["agg_value"] == pytest.approx(
        np.mean(np.minimum(r_ou, 1 / (np.asarray(r_ou) + 1e-10))), rel=1e-12
    )
    assert ou["value_by_index"][0]["score"] < exact["value_by_index"][0]["score"] / 5


def test_arithmetic_mean_in_the_epsilon_form():
    r = M.truth_ratio_value(2.0, [1.0, 3.0], wrong_mean="arithmetic", form="ou_epsilon")
    assert r == pytest.approx((math.exp(-1) + math.exp(-3)) / 2 / (math.exp(-2) + 1e-10), rel=1e-12)


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="`truth_ratio_form` must be one of"):
        M.truth_ratio_value(1.0, [1.0], form="ou")


def test_protocols_pick_their_form():
    from alignkit.eval.protocols import OPEN_UNLEARNING, TOFU_ORIG, TofuProtocol

    assert (OPEN_UNLEARNING.truth_ratio_form, TOFU_ORIG.truth_ratio_form) == ("ou_epsilon", "exact")
    with pytest.raises(ValueError, match="`truth_ratio_form` must be"):
        TofuProtocol(name="x", truth_ratio_form="eps")
