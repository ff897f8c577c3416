"""TOFU metrics on hand-made inputs with known answers (``shared/design/benchmarks.md`` §2.4, §2.7)."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest
import scipy.stats

from alignkit.eval import metrics as M

# §2.7 unit-test vectors: the full Llama-2 model, forget10 row 0 (orig logs).
GT_LOSS = 0.0145345
PARA_LOSS = 2.2287230
PERT_LOSSES = [3.3558183, 3.6901972, 3.7194076, 4.4322419, 2.9736681]
# Real Authors row 0 ("Who wrote the play 'Romeo and Juliet'?").
RA_GT_LOSS = 4.1091518
RA_WRONG = [6.0565491, 3.3801556, 6.8580394]


def test_registry_names_are_open_unlearning_handlers():
    for name in ("probability", "probability_w_options", "truth_ratio", "rouge", "ks_test", "hm_aggregate"):
        assert name in M.METRICS
    with pytest.raises(ValueError, match="registered twice"):
        M.register_metric("rouge")(lambda: None)


def test_probability_spec_vector():
    # Prob = exp(-0.0145345) = 0.98557
    out = M.probability({"0": GT_LOSS})
    assert out["agg_value"] == pytest.approx(0.98557, abs=1e-5)
    assert out["value_by_index"]["0"] == {"prob": pytest.approx(math.exp(-GT_LOSS)), "avg_loss": GT_LOSS}


def test_probability_several_answers_and_invalid_items():
    # Item "0": mean(exp(-1), exp(-2)); item "1" invalid (None) is logged but not averaged.
    out = M.probability({"0": [1.0, 2.0], "1": None, "2": 0.0})
    assert out["value_by_index"]["1"] == {"prob": None, "avg_loss": None}
    assert out["value_by_index"]["0"]["prob"] == [pytest.approx(math.exp(-1)), pytest.approx(math.exp(-2))]
    assert out["agg_value"] == pytest.approx(((math.exp(-1) + math.exp(-2)) / 2 + 1.0) / 2)


def test_truth_ratio_spec_vector_all_aggregators():
    # R = exp(2.2287230 - mean(pert)) = exp(2.2287230 - 3.6342666) = 0.245234
    assert float(np.mean(PERT_LOSSES)) == pytest.approx(3.6342666, abs=1e-7)
    r = M.truth_ratio_value(PARA_LOSS, PERT_LOSSES)
    assert r == pytest.approx(0.245234, abs=1e-6)
    assert M.truth_ratio_value(PARA_LOSS, PERT_LOSSES, wrong_mean="arithmetic") == pytest.approx(
        0.273252, abs=1e-6
    )
    for agg, expected in (
        ("closer_to_1_better", 0.245234),
        ("true_better", 0.754766),
        ("prob_mean", 0.803062),
    ):
        out = M.truth_ratio({"0": PARA_LOSS}, {"0": PERT_LOSSES}, aggregator=agg)
        assert out["agg_value"] == pytest.approx(expected, abs=1e-6), agg
        assert out["value_by_index"]["0"]["score"] == pytest.approx(0.245234, abs=1e-6)


def test_truth_ratio_on_known_probabilities():
    # Probabilities chosen so the ratios are exact: p(c)=0.5; wrong p=(0.25, 0.25) -> R = 0.5;
    # wrong p=(1.0, 0.25) -> geometric R = sqrt(0.25)/0.5 = 1.0, arithmetic R = 0.625/0.5 = 1.25.
    L = lambda p: -math.log(p)  # noqa: E731
    correct = {"a": L(0.5), "b": L(0.5)}
    wrong = {"a": [L(0.25), L(0.25)], "b": [L(1.0), L(0.25)]}
    forget = M.truth_ratio(correct, wrong, aggregator="closer_to_1_better")
    assert [forget["value_by_index"][k]["score"] for k in "ab"] == [pytest.approx(0.5), pytest.approx(1.0)]
    assert forget["agg_value"] == pytest.approx((0.5 + 1.0) / 2, abs=1e-9)  # min(R, 1/R)
    keep = M.truth_ratio(correct, wrong, aggregator="true_better")
    assert keep["agg_value"] == pytest.approx((0.5 + 0.0) / 2)  # max(0, 1 - R)
    arith = M.truth_ratio(correct, wrong, aggregator="true_better", wrong_mean="arithmetic")
    assert arith["value_by_index"]["b"]["score"] == pytest.approx(1.25)
    assert arith["agg_value"] == pytest.approx((0.5 + 0.0) / 2)


def test_truth_ratio_keeps_index_alignment_with_invalid_items():
    # open-unlearning zips unfiltered indices with filtered values (§5.8); here index "1" stays None
    # and index "2" keeps its own ratio.
    out = M.truth_ratio({"0": 1.0, "1": None, "2": 2.0}, {"0": [1.0], "1": [3.0], "2": [1.0]})
    assert out["value_by_index"]["1"] == {"score": None}
    assert out["value_by_index"]["2"]["score"] == pytest.approx(math.exp(1.0))
    assert out["agg_value"] == pytest.approx((1.0 + 1 / (math.exp(1.0) + 1e-10)) / 2)


def test_truth_ratio_is_computed_in_log_space():
    # p(c) and p(w) both underflow float64 (L = 800); R = exp(800 - 801) is still exact.
    assert M.truth_ratio_value(800.0, [801.0]) == pytest.approx(math.exp(-1))
    assert M.truth_ratio_value(0.0, [5000.0]) > 0  # clipped, not 0 or inf


def test_option_normalised_probability_spec_vector():
    # p = e^-4.1091518 / (e^-4.1091518 + e^-6.0565491 + e^-3.3801556 + e^-6.8580394) = 0.304911
    out = M.probability_w_options({"0": RA_GT_LOSS}, {"0": RA_WRONG})
    assert out["agg_value"] == pytest.approx(0.304911, abs=1e-6)
    # equal probabilities over 4 options -> 1/4 (chance level)
    assert M.probability_w_options({"0": 2.0}, {"0": [2.0, 2.0, 2.0]})["agg_value"] == pytest.approx(0.25)


def test_rouge_spec_vector_real_authors_row0():
    gen = "The play 'Romeo and Juliet' was written by William Shakespeare."
    out = M.rouge({"0": gen}, {"0": "William Shakespeare"})
    assert out["agg_value"] == 1.0
    entry = out["value_by_index"]["0"]
    assert entry["generation"] == gen and entry["ground_truth"] == "William Shakespeare"
    assert entry["rougeL_f1"] == pytest.approx(2 * (2 / 10) * 1 / (2 / 10 + 1))


def _tokens(text: str) -> list[str]:
    # rouge_score's tokenisation without stemming: lowercase, runs of [a-z0-9] are the tokens.
    return re.findall(r"[a-z0-9]+", text.lower())


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


@pytest.mark.parametrize(
    "ref, gen",
    [
        ("The dogs are running in the park.", "A dog runs in a park"),
        ("Roberto Bolaño wrote novels", "bolano wrote many novels"),
        ("the cat the cat sat", "cat the the sat cat"),
        ("", "anything"),
        ("Paris", ""),
    ],
)
def test_rouge_scores_against_an_independent_lcs(ref, gen):
    """ROUGE-L recall/F1 (sentence LCS) and ROUGE-1 recall (clipped unigram overlap), written out here."""
    r, g = _tokens(ref), _tokens(gen)
    lcs = _lcs(r, g)
    recall = lcs / len(r) if r else 0.0
    precision = lcs / len(g) if g else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    overlap = sum((Counter(r) & Counter(g)).values())
    got = M.rouge_scores(ref, gen, use_stemmer=False)
    assert got["rougeL_recall"] == pytest.approx(recall, abs=1e-12)
    assert got["rougeL_f1"] == pytest.approx(f1, abs=1e-12)
    assert got["rouge1_recall"] == pytest.approx(overlap / len(r) if r else 0.0, abs=1e-12)


def test_rouge_hand_computed_lcs():
    # ref tokens: the cat sat on the mat (6); gen: the cat on a mat. LCS = the cat on mat = 4.
    assert M.rouge_scores("The cat sat on the mat.", "the cat on a mat")["rougeL_recall"] == pytest.approx(
        4 / 6
    )
    # Stemming (tokens > 3 chars): dogs->dog, running/runs->run: LCS(the dog are run | a dog run) = 2 of 4.
    assert M.rouge_scores("The dogs are running", "a dog runs", use_stemmer=True)["rougeL_recall"] == 0.5
    assert M.rouge_scores("The dogs are running", "a dog runs", use_stemmer=False)["rougeL_recall"] == 0.0


def test_ks_pvalue_equals_scipy_and_is_monotone_invariant():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 1, 40), rng.lognormal(0.3, 1, 40)
    p = M.ks_pvalue(a, b)
    assert p == scipy.stats.ks_2samp(a, b).pvalue
    assert M.ks_pvalue(1 / a, 1 / b) == pytest.approx(p, rel=1e-12)  # orig feeds 1/R
    assert M.ks_pvalue(np.log(a), np.log(b)) == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize("n, floor", [(40, 1.86e-23), (200, 1.94e-119), (300, 1.48e-179), (400, 1.06e-239)])
def test_forget_quality_floors(n, floor):
    # §2.4.4: fully separated samples give these p-values; identical samples give 1.0.
    sep = M.forget_quality(
        {"value_by_index": {str(i): {"score": 1.0 + i} for i in range(n)}},
        {"value_by_index": {str(i): {"score": 1000.0 + i} for i in range(n)}},
    )
    assert sep["agg_value"] == pytest.approx(floor, rel=0.01)
    same = {"value_by_index": {str(i): {"score": 0.5 + i / n} for i in range(n)}}
    assert M.forget_quality(same, same)["agg_value"] == 1.0


def test_forget_quality_without_reference_is_none_and_drops_invalid():
    tr = {"value_by_index": {"0": {"score": 0.2}, "1": {"score": None}, "2": {"score": 0.9}}}
    assert M.forget_quality(tr, None) == {"agg_value": None}
    ref = {"value_by_index": {"0": {"score": 0.3}, "1": {"score": 0.8}, "2": {"score": 0.5}}}
    assert M.forget_quality(tr, ref)["agg_value"] == scipy.stats.ks_2samp([0.2, 0.9], [0.3, 0.8, 0.5]).pvalue


def test_model_utility_harmonic_mean():
    comps = dict(zip(M.MODEL_UTILITY_COMPONENTS, [0.9, 0.8, 0.5, 0.4, 0.9, 0.6, 0.45, 0.85, 0.55]))
    mu = M.model_utility(comps)["agg_value"]
    assert mu == pytest.approx(scipy.stats.hmean(list(comps.values())), rel=1e-12)
    assert mu == pytest.approx(9 / sum(1 / v for v in comps.values()))
    assert M.model_utility({k: 0.5 for k in M.MODEL_UTILITY_COMPONENTS})["agg_value"] == pytest.approx(0.5)
    assert M.model_utility({**comps, "wf_Truth_Ratio": 0.0})["agg_value"] == 0.0  # any zero -> 0
    assert M.model_utility({**comps, "ra_Q_A_ROUGE": None})["agg_value"] is None
    with pytest.raises(ValueError, match="missing"):
        M.model_utility({"retain_Q_A_Prob": 0.5})


def test_mismatched_indices_are_refused():
    with pytest.raises(ValueError, match="same indices"):
        M.truth_ratio({"0": 1.0}, {"1": [1.0]})


def test_stemmed_rouge_equals_rouge_scores_own_stemming_scorer():
    """ROUGE with the memoised Porter stemmer gives rouge_score's own stemming scorer's numbers (texts that
    repeat their inflected words, so most stems come from the memo)."""
    from rouge_score import rouge_scorer

    texts = [
        "The authors were running the writing workshops while the author runs a workshop.",
        "Writing, written, writes: the writer's writings were studied by studious students.",
        "Basil Mahfouz Al-Kuwaiti's novels explore identities; his novel explores identity.",
        "Generalization generalizes generally; the generalized generalizations were general.",
    ]
    reference = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    for ref in texts:
        for gen in texts:
            want = reference.score(ref, gen)
            got = M.rouge_scores(ref, gen, use_stemmer=True)
            assert got["rougeL_recall"] == want["rougeL"].recall
            assert got["rougeL_f1"] == want["rougeL"].fmeasure
            assert got["rouge1_recall"] == want["rouge1"].recall
