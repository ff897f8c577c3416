"""Membership-inference attacks: spec vectors worked by hand, AUC against brute force, PrivLeak sign.

Spec: ``shared/design/benchmarks.md`` §3.3.3 and §4. Every score is "higher = less member-like".
"""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest
import torch

from alignkit.eval import mia

# Ten token log-probs, deliberately unsorted: sorted ascending they are -10, -9, ..., -1.
LOGPS = [-3.0, -1.0, -10.0, -4.0, -2.0, -9.0, -5.0, -8.0, -6.0, -7.0]


# ----------------------------------------------------------------------------------------------
# Per-item scores
# ----------------------------------------------------------------------------------------------


def test_loss_is_mean_nll():
    # -(1/10) * (-(1+2+...+10)) = 55/10
    assert mia.loss_score(LOGPS) == pytest.approx(5.5)
    assert mia.loss_score(torch.tensor(LOGPS)) == pytest.approx(5.5)


def test_zlib_divides_loss_by_compressed_length():
    text = "hello hello hello"
    # zlib at its default level compresses these 17 bytes to 16 (header + deflate + adler32).
    assert len(zlib.compress(text.encode("utf-8"))) == 16
    assert mia.zlib_score(LOGPS, text) == pytest.approx(5.5 / 16)


@pytest.mark.parametrize(
    ("k", "rule", "expected"),
    [
        # k=0.4, n=10: m = 4, the four smallest are -10, -9, -8, -7 -> MinK = -8.5, score +8.5
        (0.4, "at_least_one", 8.5),
        (0.4, "floor", 8.5),
        # k=0.2: m = 2 -> mean(-10, -9) = -9.5
        (0.2, "at_least_one", 9.5),
        # k=0.05: floor(0.5) = 0; OU keeps one token (-10), MUSE-orig gets an empty mean
        (0.05, "at_least_one", 10.0),
        (0.05, "floor", math.nan),
        # k=1: every token -> the LOSS value
        (1.0, "floor", 5.5),
    ],
)
def test_min_k_is_mean_of_lowest_k_percent(k, rule, expected):
    got = mia.min_k_score(LOGPS, k, count=rule)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


def test_min_k_count_rules_on_short_texts():
    # MUSE-orig: floor(0.4 n) is 0 for n < 3 (empty mean); OU keeps at least one token.
    assert [mia.min_k_count(n, 0.4, "floor") for n in (1, 2, 3, 5, 10)] == [0, 0, 1, 2, 4]
    assert [mia.min_k_count(n, 0.4, "at_least_one") for n in (1, 2, 3, 5, 10)] == [1, 1, 1, 2, 4]
    assert mia.min_k_count(0, 0.4, "at_least_one") == 0
    with pytest.raises(ValueError, match="`k` must be in"):
        mia.min_k_count(5, 0.0)


def test_min_k_plus_plus_normalises_by_vocab_mean_and_std():
    # z = (l - mu) / sqrt(max(var, 1e-6)):
    #   token 0: (-1 - -1) / 1 = 0
    #   token 1: (-2 - -1) / 2 = -0.5
    #   token 2: (-3 - -1) / 1 = -2
    #   token 3: (-1 - -3) / sqrt(1e-6) = 2000   (var 0 is clamped to 1e-6)
    logps, mu, var = [-1.0, -2.0, -3.0, -1.0], [-1.0, -1.0, -1.0, -3.0], [1.0, 4.0, 1.0, 0.0]
    # k=0.5, n=4 -> the 2 smallest z: -2, -0.5 -> score -mean = 1.25
    assert mia.min_k_plus_plus_score(logps, mu, var, 0.5) == pytest.approx(1.25)
    # k=1 -> -mean(0, -0.5, -2, 2000) = -499.375
    assert mia.min_k_plus_plus_score(logps, mu, var, 1.0) == pytest.approx(-499.375)
    with pytest.raises(ValueError, match="one value per token"):
        mia.min_k_plus_plus_score(logps, mu[:3], var, 0.5)


# ----------------------------------------------------------------------------------------------
# AUC and PrivLeak
# ----------------------------------------------------------------------------------------------


def brute_force_auc(negatives, positives) -> float:
    """Count every (neg, pos) pair: 1 if pos > neg, 1/2 if tied."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for n, p in itertools.product(negatives, positives))
    return wins / (len(negatives) * len(positives))


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    neg = rng.integers(0, 6, size=int(rng.integers(1, 12))).astype(float)  # small range: many ties
    pos = rng.integers(0, 6, size=int(rng.integers(1, 12))).astype(float)
    assert mia.auc(neg, pos) == pytest.approx(brute_force_auc(neg, pos), abs=1e-12)


def test_auc_matches_sklearn_when_installed():
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed")
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(size=15).round(1), rng.normal(0.5, size=9).round(1)
    labels = [0] * len(neg) + [1] * len(pos)
    assert mia.auc(neg, pos) == pytest.approx(metrics.roc_auc_score(labels, np.concatenate([neg, pos])))


def test_auc_extremes_and_errors():
    assert mia.mia_auc([1.0, 2.0], [3.0, 4.0]) == 1.0  # every holdout scores as less member-like
    assert mia.mia_auc([3.0, 4.0], [1.0, 2.0]) == 0.0
    assert mia.mia_auc([1.0, 2.0], [1.0, 2.0]) == 0.5
    with pytest.raises(ValueError, match="at least one item of each class"):
        mia.auc([], [1.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        mia.auc([math.nan], [1.0])


def test_muse_auc_is_the_complement_of_the_usual_auc():
    """§3.3.3: AUC_MUSE = P[MinK(h) > MinK(f)] + ½P[tie] = 1 − OU's AUC, ties included."""
    mink_forget, mink_holdout = [-1.0, -2.0, -2.0, -4.0], [-2.0, -3.0, -5.0]
    auc_usual = mia.mia_auc([-m for m in mink_forget], [-m for m in mink_holdout])  # OU stores s = -MinK
    auc_muse = brute_force_auc(mink_forget, mink_holdout)  # forget label 0, holdout 1, score MinK
    assert auc_usual + auc_muse == pytest.approx(1.0)
    assert auc_usual == pytest.approx(brute_force_auc([-m for m in mink_forget], [-m for m in mink_holdout]))


def test_privleak_sign_convention():
    # A model that leaks exactly like the retrained one: 0.
    assert mia.privleak(0.62, 0.62) == 0.0
    # Target model that memorised the forget set: usual AUC 1 -> AUC_MUSE 0; retrain 0.5 -> -100 %.
    assert mia.privleak(1.0, 0.5, eps=0.0) == pytest.approx(-100.0)
    # Memorising more than the retrained model -> negative; forgetting "too much" -> positive.
    assert mia.privleak(0.8, 0.6) < 0 < mia.privleak(0.4, 0.6)
    # The MUSE formula on AUC_MUSE = 1 - AUC, written out: (0.2 - 0.4) / 0.4 * 100 = -50.
    assert mia.privleak(0.8, 0.6, eps=0.0) == pytest.approx(-50.0)
    # Equivalent usual-convention form (§3.3.3 item 4): (AUC_r - AUC_m) / (1 - AUC_r) * 100.
    assert mia.privleak(0.8, 0.6, eps=0.0) == pytest.approx((0.6 - 0.8) / (1 - 0.6) * 100)
    # OU's epsilon only matters at a zero denominator; MUSE-orig (eps=0) then gives inf / nan.
    assert mia.privleak(0.9, 1.0, eps=0.0) == math.inf
    assert math.isnan(mia.privleak(1.0, 1.0, eps=0.0))
    assert mia.privleak(0.9, 1.0) == pytest.approx(0.1 / 1e-10 * 100)


# ----------------------------------------------------------------------------------------------
# Statistics from a model, and the runner
# ----------------------------------------------------------------------------------------------

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A short one.",
    "Ministers met on Tuesday to discuss the budget and the new rail line to the north.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.models import build_tiny_model

    path = build_tiny_model(TEXTS * 4, tmp_path_factory.mktemp("mia_tiny"), vocab_size=300, seed=0)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_raw_text_ids_masks_first_position_and_truncates(tiny):
    _, tok = tiny
    ids_all = tok(TEXTS[0], add_special_tokens=True)["input_ids"]
    ids, n_ctx = mia.raw_text_ids(tok, TEXTS[0])
    # The tiny tokenizer adds no BOS, so the first text token is context only.
    assert ids == ids_all and n_ctx == 1
    ids, _ = mia.raw_text_ids(tok, TEXTS[0], max_tokens=5)
    assert ids == ids_all[:5]  # n_prefix 0 + 5


def test_text_token_stats_match_a_direct_forward(tiny):
    model, tok = tiny
    stats = mia.text_token_stats(model, tok, TEXTS, batch_size=2)  # padding in the first batch
    for text, st in zip(TEXTS, stats):
        ids = tok(text, add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        expected = logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
        p = logp[:-1].exp()
        mu = (p * logp[:-1]).sum(-1)
        var = (p * logp[:-1] ** 2).sum(-1) - mu**2
        assert st.target_ids == ids[1:]
        torch.testing.assert_close(st.token_logps, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(st.mu, mu, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(st.var, var, atol=1e-4, rtol=1e-4)
        assert st.drop_last().target_ids == ids[1:-1]


def test_run_mia_layout_and_symmetry(tiny):
    model, tok = tiny
    logs = mia.run_mia(model, tok, TEXTS, TEXTS, max_tokens=None, batch_size=3)
    assert set(logs) == {"mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"}
    for entry in logs.values():
        # Identical member and non-member sets are indistinguishable: AUC exactly 0.5.
        assert entry["agg_value"] == entry["auc"] == 0.5
        assert set(entry["forget"]["value_by_index"]) == {"0", "1", "2"}
    # The logged per-item scores are the pure functions applied to the statistics (T' for Min-K).
    st = mia.text_token_stats(model, tok, TEXTS[:1])[0]
    assert logs["mia_min_k"]["forget"]["value_by_index"]["0"]["score"] == pytest.approx(
        mia.min_k_score(st.token_logps[:-1], 0.4)
    )
    assert logs["mia_loss"]["forget"]["value_by_index"]["0"]["score"] == pytest.approx(
        mia.loss_score(st.token_logps)
    )
    zlib_text = tok.decode(st.target_ids, skip_special_tokens=True)
    assert logs["mia_zlib"]["forget"]["value_by_index"]["0"]["score"] == pytest.approx(
        mia.loss_score(st.token_logps) / len(zlib.compress(zlib_text.encode()))
    )


def test_run_mia_names_items_without_a_score(tiny):
    model, tok = tiny
    # "A" is one token: nothing left to score after the first position.
    with pytest.raises(ValueError, match=r"forget item\(s\) \[1\]"):
        mia.run_mia(model, tok, [TEXTS[0], "A"], TEXTS, attacks=["min_k"])
    with pytest.raises(ValueError, match="Unknown MIA attack"):
        mia.run_mia(model, tok, TEXTS, TEXTS, attacks=["mink"])


def test_gradnorm_is_mean_of_per_tensor_norms(tiny):
    model, tok = tiny
    [score] = mia.gradnorm_scores(model, tok, TEXTS[:1])
    ids = tok(TEXTS[0])["input_ids"]
    model.zero_grad()
    logp = model(input_ids=torch.tensor([ids])).logits[0, :-2].float().log_softmax(-1)  # T' drops the last
    loss = -logp.gather(-1, torch.tensor(ids[1:-1])[:, None]).mean()
    loss.backward()
    norms = [p.grad.norm(2) for p in model.parameters() if p.grad is not None]
    assert score == pytest.approx(float(torch.stack(norms).mean()), rel=1e-5)
    model.zero_grad(set_to_none=True)
    assert not model.training  # restored
