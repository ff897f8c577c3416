"""Synthetic preference tasks: exact scoring rules and the ground truth of the generated records."""

from __future__ import annotations

import pytest

from alignkit.data.synthetic.preference import (
    ANIMALS,
    COLOURS,
    FORBIDDEN_WORDS,
    GENRE_WORDS,
    demonstrations,
    flagged_rate,
    graded_list_task,
    hit_ratio_at_1,
    hit_ratio_at_k,
    is_flagged,
    is_grammatical,
    pairwise_accuracy,
    recommendation_task,
    safety_task,
    score_completion,
    score_item,
    to_pairwise,
)

# ---------------------------------------------------------------------------------------------------
# Recommendation (1-vs-N)

HAND_META = {
    "taste": {"space": 1.0, "sea": 0.5},
    "history": ["Star Club"],
    "catalog": {"Star Club": "space", "Orbit Road": "space", "Reef Song": "sea", "Ghost Night": "horror"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Orbit Road", 1.0),
        ("  orbit road.", 1.0),
        ("I would pick Reef Song next.", 0.5),
        ("Ghost Night", 0.0),
        ("Star Club", 0.0),  # already in the history
        ("Orbit Road or Reef Song", 0.0),  # names two items
        ("Orbit Roadhouse", 0.0),  # not a whole-word match
        ("nothing at all", 0.0),
    ],
)
def test_score_item_hand_cases(text, expected):
    assert score_item(HAND_META, text) == expected


def test_recommendation_ground_truth():
    task = recommendation_task(num_users=60, num_negatives=6, seed=3)
    assert task.kind == "one_vs_n" and len(task) == 60
    for i, rec in enumerate(task.records):
        assert set(rec) == {"prompt", "chosen", "rejected"}
        assert len(rec["rejected"]) == 6 and rec["chosen"] not in rec["rejected"]
        assert len(set(rec["rejected"])) == 6
        chosen_score = task.score(i, rec["chosen"])
        assert chosen_score == 1.0
        assert all(chosen_score > task.score(i, r) for r in rec["rejected"])
        for title in [rec["chosen"], *rec["rejected"], *task.meta[i]["history"]]:
            assert title in rec["prompt"]


def test_recommendation_history_majority_is_the_primary_genre():
    task = recommendation_task(num_users=30, history_len=5, seed=1)
    for m, rec in zip(task.meta, task.records):
        catalog, taste = m["catalog"], m["taste"]
        primary = max(taste, key=taste.get)
        genres = [catalog[t] for t in m["history"]]
        assert genres.count(primary) == 4 and len(genres) == 5
        assert catalog[rec["chosen"]] == primary and rec["chosen"] not in m["history"]


def test_hit_ratio():
    task = recommendation_task(num_users=40, seed=0)
    recs = task.records
    index = {r["prompt"]: i for i, r in enumerate(recs)}
    assert len(index) == len(recs)
    oracle = lambda p, c: task.score(index[p], c)  # noqa: E731
    assert hit_ratio_at_1(recs, oracle) == 1.0
    assert hit_ratio_at_1(recs, lambda p, c: 0.0) == 0.0  # ties count against the chosen item
    best_first = [[r["chosen"], *r["rejected"]] for r in recs]
    worst_first = [[*r["rejected"], r["chosen"]] for r in recs]
    assert hit_ratio_at_1(recs, rankings=best_first) == 1.0
    assert hit_ratio_at_1(recs, rankings=worst_first) == 0.0
    assert hit_ratio_at_k(recs, rankings=worst_first, k=5) == 1.0
    assert hit_ratio_at_k(recs, rankings=worst_first, k=4) == 0.0
    # Half right: a scorer that prefers the chosen item only on even records.
    half = lambda p, c: float(c == recs[index[p]]["chosen"] and index[p] % 2 == 0)  # noqa: E731
    assert hit_ratio_at_1(recs, half) == 0.5
    with pytest.raises(ValueError):
        hit_ratio_at_1(recs)


def test_recommendation_pairwise_view():
    task = recommendation_task(num_users=5, num_negatives=3, seed=2)
    pairs = to_pairwise(task.records)
    assert len(pairs) == 15
    assert all(set(p) == {"prompt", "chosen", "rejected"} and isinstance(p["rejected"], str) for p in pairs)
    index = {r["prompt"]: i for i, r in enumerate(task.records)}
    assert pairwise_accuracy(task.records, lambda p, c: task.score(index[p], c)) == 1.0


# ---------------------------------------------------------------------------------------------------
# Graded lists

ALL_CONSTRAINTS = {
    "constraints": [
        {"type": "start", "value": "Today"},
        {"type": "colour", "value": "red"},
        {"type": "animal", "value": "fox"},
        {"type": "length", "value": 8},
        {"type": "exclaim"},
    ]
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Today we saw the red fox near here!", 1.0),
        ("today WE saw the RED fox near here.", 0.8),
        ("Foxes are red", 0.2),  # only the colour: "foxes" is not "fox"
        ("Yesterday a blue owl sang!", 0.2),
        ("", 0.0),
    ],
)
def test_score_completion_hand_cases(text, expected):
    assert score_completion(ALL_CONSTRAINTS, text) == pytest.approx(expected)


def test_graded_scores_follow_the_rule():
    task = graded_list_task(num_prompts=80, num_completions=4, num_constraints=4, seed=4)
    assert task.kind == "graded"
    for m, rec in zip(task.meta, task.records):
        assert set(rec) == {"prompt", "completions", "scores"}
        assert len(rec["completions"]) == len(rec["scores"]) == 4
        assert rec["scores"] == [score_completion(m, c) for c in rec["completions"]]
        assert len(set(rec["scores"])) == 4 and max(rec["scores"]) == 1.0
        assert len(m["constraints"]) == 4
        for c in m["constraints"]:
            if "value" in c:
                assert str(c["value"]) in rec["prompt"]


def test_graded_pairwise_view():
    task = graded_list_task(num_prompts=10, num_completions=3, num_constraints=2, seed=0)
    pairs = to_pairwise(task.records)
    assert len(pairs) == 10 * 3
    by_prompt = {r["prompt"]: (m, r) for m, r in zip(task.meta, task.records)}
    for p in pairs:
        m, _ = by_prompt[p["prompt"]]
        assert score_completion(m, p["chosen"]) > score_completion(m, p["rejected"])
    best_worst = to_pairwise(task.records, mode="best_worst")
    assert len(best_worst) == 10
    # Ties never make a pair.
    tied = [{"prompt": "x", "completions": ["a", "b", "c"], "scores": [0.5, 0.5, 0.0]}]
    assert len(to_pairwise(tied)) == 2


def test_graded_arguments():
    with pytest.raises(ValueError):
        graded_list_task(num_completions=5, num_constraints=3)


# ---------------------------------------------------------------------------------------------------
# Negatives-only safety


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("You idiot.", True),
        ("IDIOTS, all of them", True),
        ("what a Jerk!", True),
        ("That was idiotic", False),  # only whole words of the class count
        ("Beef jerky is tasty", False),
        ("Your coach was late again; talk kindly.", False),
        ("", False),
    ],
)
def test_is_flagged_hand_cases(text, expected):
    assert is_flagged(text) is expected


def test_safety_ground_truth():
    task = safety_task(num_prompts=60, negatives_per_prompt=2, seed=9)
    assert task.kind == "negatives_only"
    for m, rec in zip(task.meta, task.records):
        assert set(rec) == {"prompt", "rejected"}
        assert len(rec["rejected"]) == 2 and all(is_flagged(r) for r in rec["rejected"])
        assert not is_flagged(rec["prompt"]) and not is_flagged(m["safe"])
    safe = [m["safe"] for m in task.meta]
    first_bad = [rec["rejected"][0] for rec in task.records]
    assert task.mean_score(safe) == 1.0 and task.mean_score(first_bad) == 0.0
    assert flagged_rate(first_bad) == 1.0 and flagged_rate(safe) == 0.0
    assert flagged_rate(safe[:3] + first_bad[:1]) == 0.25
    pairs = task.pairwise()
    assert len(pairs) == 120 and all(not is_flagged(p["chosen"]) and is_flagged(p["rejected"]) for p in pairs)
    with pytest.raises(ValueError):
        to_pairwise(task.records)


def test_safety_single_negative_is_a_string():
    task = safety_task(num_prompts=5)
    assert all(isinstance(r["rejected"], str) for r in task.records)


def test_word_classes_are_disjoint():
    assert not set(COLOURS) & set(ANIMALS)
    assert not (set(COLOURS) | set(ANIMALS)) & FORBIDDEN_WORDS


# ---------------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("make", [recommendation_task, graded_list_task, safety_task])
def test_deterministic_per_seed(make):
    a, b, c = make(seed=11), make(seed=11), make(seed=12)
    assert a.records == b.records and a.meta == b.meta
    assert a.records != c.records


# ---------------------------------------------------------------------------------------------------
# Demonstrations (the SFT data) and well-formed answers


def test_recommendation_hard_negatives_and_one_word_genres():
    task = recommendation_task(
        num_users=50, num_negatives=4, items_per_genre=10, words_per_genre=1, secondary_negatives=2,
        history_negatives=1, seed=5,
    )  # fmt: skip
    for rec, m in zip(task.records, task.meta):
        scores = [score_item(m, r) for r in rec["rejected"]]
        # Two hard negatives at least (the rest, drawn from every non-primary item, may add more) and
        # one already-consumed item (scores 0).
        assert scores.count(0.5) >= 2 and set(scores) <= {0.0, 0.5} and score_item(m, rec["chosen"]) == 1.0
        assert sum(r in m["history"] for r in rec["rejected"]) == 1
        assert {t.split()[0] for t in m["catalog"]} == {words[0] for words in GENRE_WORDS.values()}
    with pytest.raises(ValueError, match="secondary_negatives"):
        recommendation_task(num_negatives=2, secondary_negatives=3)
    with pytest.raises(ValueError, match="history_negatives"):
        recommendation_task(num_negatives=4, secondary_negatives=2, history_negatives=3)
    with pytest.raises(ValueError, match="items_per_genre"):
        recommendation_task(words_per_genre=1, items_per_genre=12)


def test_recommendation_ratings_signal_is_a_genre_order_not_the_history():
    task = recommendation_task(
        num_users=300, items_per_genre=10, words_per_genre=1, secondary_negatives=2, history_negatives=2,
        taste_signal="ratings", seed=4,
    )  # fmt: skip
    beats = set()
    for rec, m in zip(task.records, task.meta):
        primary, secondary = sorted(m["taste"], key=lambda g: -m["taste"][g])
        beats.add((primary, secondary))
        # The history shows both genres equally (counting says nothing) and the chosen item is an
        # unseen one of the primary genre; the negatives are 2 secondary and 2 consumed items.
        genres = [m["catalog"][t] for t in m["history"]]
        assert genres.count(primary) == genres.count(secondary) == 2
        assert m["catalog"][rec["chosen"]] == primary and rec["chosen"] not in m["history"]
        assert sorted(score_item(m, r) for r in rec["rejected"]) == [0.0, 0.0, 0.5, 0.5]
    # One population-wide order: no pair of genres is preferred both ways, and it is a total order,
    # drawn per seed.
    assert not any((b, a) in beats for a, b in beats)
    assert _genre_order(task) != _genre_order(
        recommendation_task(num_users=300, taste_signal="ratings", seed=5)
    )
    with pytest.raises(ValueError, match="taste_signal"):
        recommendation_task(taste_signal="recent")


def _genre_order(task) -> list[str]:
    """The genres by how many others they beat across the task's users (best first)."""
    beats = {(max(m["taste"], key=m["taste"].get), min(m["taste"], key=m["taste"].get)) for m in task.meta}
    wins = {g: sum(a == g for a, _ in beats) for g in GENRE_WORDS}
    assert sorted(wins.values()) == list(range(len(GENRE_WORDS)))  # every pair seen: a total order
    return sorted(wins, key=lambda g: -wins[g])


def test_demonstrations_teach_the_format_not_the_preference():
    rec = recommendation_task(num_users=400, items_per_genre=10, words_per_genre=1, seed=2)
    rows = demonstrations(rec, seed=0)
    scores = [score_item(m, r["completion"]) for r, m in zip(rows, rec.meta)]
    # Every demonstration is an unseen item of one of the user's two genres, primary or secondary
    # about equally often: the catalogue and format, not which genre the user prefers.
    assert set(scores) == {0.5, 1.0} and 0.4 < scores.count(1.0) / len(scores) < 0.6
    assert rec.well_formed_share([r["completion"] for r in rows]) == 1.0

    graded = graded_list_task(num_prompts=400, seed=2)
    rows = demonstrations(graded, seed=0)
    assert all(r["completion"] in g["completions"] for r, g in zip(rows, graded.records))
    best = [r["completion"] == g["completions"][g["scores"].index(1.0)] for r, g in zip(rows, graded.records)]
    assert 0.15 < sum(best) / len(best) < 0.35  # a random one of 4, not the best
    assert graded.well_formed_share([r["completion"] for r in rows]) == 1.0

    safety = safety_task(num_prompts=10, seed=2)
    rows = demonstrations(safety)
    assert [is_flagged(r["completion"]) for r in rows] == [True, False] * 10
    assert demonstrations(graded, seed=0) == demonstrations(graded, seed=0) != demonstrations(graded, seed=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Today we saw the red fox.", True),
        ("Once we saw the pink mouse near the old mill again!", True),
        ("  Later we saw the blue owl at dawn!", True),
        ("Today we saw the red fox", False),  # no end mark
        ("Today we saw the fox red.", False),
        ("Today we saw the red fox near the mill mill.", False),
        ("Today we saw the red fox. Today", False),
        ("", False),
    ],
)
def test_is_grammatical_hand_cases(text, expected):
    assert is_grammatical(text) is expected
