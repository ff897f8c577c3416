"""Preference evaluation: the spec §6.1 vectors (methods-alignment.md), NDCG/Kendall, and a real run."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit.data.synthetic.preference import graded_list_task, recommendation_task
from alignkit.eval.preference import (
    difficulty_thresholds,
    evaluate_preference,
    idealized_log_values,
    idealized_ranking_accuracy,
    kendall_tau,
    ndcg,
    ranking_accuracy,
)

D = torch.float64
# Spec §6.1: 4 pairs; policy and reference use the same numbers.
LP_W, LP_L = (
    torch.tensor([-50.0, -12.0, -30.0, -8.0], dtype=D),
    torch.tensor([-40.0, -15.0, -30.0, -9.0], dtype=D),
)
N_W, N_L = torch.tensor([25.0, 6.0, 10.0, 4.0], dtype=D), torch.tensor([10.0, 6.0, 15.0, 3.0], dtype=D)
ALPHA = torch.tensor([0.75, 0.5, 1.0, 0.75], dtype=D)


def close(actual, expected, tol=1e-8):
    assert torch.allclose(
        torch.as_tensor(actual, dtype=D), torch.as_tensor(expected, dtype=D), atol=tol, rtol=0
    ), (
        actual,
        expected,
    )


def test_ranking_accuracy_spec():
    r = ranking_accuracy(LP_W, LP_L, ALPHA)
    assert r.tolist() == [0, 1, 1, 1] and float(r.mean()) == 0.75  # pair 3 is a tie, counted correct
    r_norm = ranking_accuracy(LP_W / N_W, LP_L / N_L)
    assert r_norm.tolist() == [1, 1, 0, 1] and float(r_norm.mean()) == 0.75


def test_tie_rule_compares_probabilities():
    """alpha = 0.5: correct iff |pi_w - pi_l| < 0.01, whichever is larger."""
    lp_w, lp_l = (
        torch.log(torch.tensor([0.30, 0.30], dtype=D)),
        torch.log(torch.tensor([0.295, 0.2], dtype=D)),
    )
    assert ranking_accuracy(lp_l, lp_w, torch.tensor([0.5, 0.5], dtype=D)).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "beta,values,accuracy",
    [
        (0.1, [0.9861228867, 3.0, 69.0775527898, 11.9861228867], 1.0),
        (1.0, [-8.9013877113, 3.0, 6.9077552790, 2.0986122887], 0.75),
        (5.0, [-9.7802775423, 3.0, 1.3815510558, 1.2197224577], 0.75),
    ],
)
def test_idealized_spec(beta, values, accuracy):
    close(idealized_log_values(LP_W, LP_L, ALPHA, beta), values)
    out = idealized_ranking_accuracy(LP_W, LP_L, ALPHA, betas=[beta])
    assert out["per_beta"][beta] == accuracy


def test_idealized_grid_summary():
    out = idealized_ranking_accuracy(LP_W, LP_L, ALPHA, betas=[0.1, 1.0, 5.0])
    assert (out["min"], out["median"], out["max"]) == (0.75, 0.75, 1.0)


def test_difficulty_thresholds_spec():
    close(difficulty_thresholds(LP_W, LP_L, 0.1), [0.3132616875, 0.8543552445, 0.6931471806, 0.7443966601])


def _brute_tau_b(x, y):
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx * dy > 0:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / math.sqrt(
        (concordant + discordant + ties_x) * (concordant + discordant + ties_y)
    )


def test_ndcg_and_kendall_against_their_definitions():
    labels = [1.0, 0.25, 0.75, 0.0]
    assert ndcg([4.0, 1.0, 3.0, 0.0], labels) == pytest.approx(1.0)  # the ideal order
    scores = [0.0, 3.0, 1.0, 2.0]  # order: 1, 3, 2, 0
    gains = [2**v - 1 for v in labels]
    dcg = sum(gains[i] / math.log2(2 + p) for p, i in enumerate([1, 3, 2, 0]))
    ideal = sum(g / math.log2(2 + p) for p, g in enumerate(sorted(gains, reverse=True)))
    assert ndcg(scores, labels) == pytest.approx(dcg / ideal, abs=1e-12)
    tied = [0.5, 0.5, 0.0, 1.0]
    assert kendall_tau(scores, tied) == pytest.approx(_brute_tau_b(scores, tied), abs=1e-12)


@pytest.fixture(scope="module")
def pref_model(tmp_path_factory):
    from alignkit.models import build_tiny_model

    rec, graded = recommendation_task(num_users=6, seed=2), graded_list_task(num_prompts=6, seed=2)
    texts = [r["prompt"] for r in rec.records + graded.records] + [r["chosen"] for r in rec.records]
    texts += [c for r in graded.records for c in r["completions"]] + [
        x for r in rec.records for x in r["rejected"]
    ]
    path = build_tiny_model(texts, tmp_path_factory.mktemp("pref_model"), vocab_size=400, seed=0)
    return path, rec, graded


def _independent_logps(model, tokenizer, prompt, completion):
    ids_p = tokenizer(prompt)["input_ids"]
    ids_c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([ids_p + ids_c])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    targets = ids[0, 1:]
    return float(logps[torch.arange(len(ids_p) - 1, ids.shape[1] - 1), targets[len(ids_p) - 1 :]].sum())


def test_evaluate_preference_on_the_synthetic_tasks(pref_model, tmp_path):
    path, rec, graded = pref_model
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    result = evaluate_preference(
        model, rec.records, tokenizer=tokenizer, ref_model=path, task=rec, progress=False
    )
    s = result.summary
    assert s["num_pairs"] == 6 * 4
    # Ranking accuracy from an independent forward of every (prompt, completion).
    correct = []
    for r in rec.records:
        w = _independent_logps(model, tokenizer, r["prompt"], r["chosen"])
        correct += [w >= _independent_logps(model, tokenizer, r["prompt"], x) for x in r["rejected"]]
    assert s["ranking_accuracy"] == pytest.approx(sum(correct) / len(correct))
    # Policy == reference: every reward margin is 0, so strict reward accuracy is 0.
    assert s["reward_accuracy"] == 0.0 and s["reward_margin"] == pytest.approx(0.0, abs=1e-9)
    assert all(0.0 <= s[k] <= 1.0 for k in ("hit_ratio_at_1", "hit_ratio_at_1_by_likelihood", "valid_ratio"))
    assert s["hit_ratio_at_1"] <= s["valid_ratio"]  # a hit names exactly one title
    assert all("generation" in row for row in result.rows)

    listed = evaluate_preference(model, graded.records, tokenizer=tokenizer, task=graded, progress=False)
    assert {"ndcg", "kendall_tau", "list_exact_match", "ranking_accuracy"} <= set(listed.summary)
    assert 0.0 < listed.summary["ndcg"] <= 1.0
    paths = listed.save(tmp_path / "out")
    saved = json.loads(paths["log"].read_text())
    assert saved["summary"]["ndcg"] == listed.summary["ndcg"] and len(saved["rows"]) == 6
    assert paths["plot"].is_file()


def test_eval_preference_command(pref_model, tmp_path, capsys):
    from alignkit.cli import main

    path, _, _ = pref_model
    out = tmp_path / "cli"
    code = main(
        ["eval", "preference", "--model", str(path), "--ref-model", str(path), "--task", "graded_list",
         "--num-prompts", "4", "--skip", "2", "--output-dir", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "PREFERENCE_SUMMARY.json").read_text())
    assert summary["num_rows"] == 4 and "ndcg" in summary and summary["reward_accuracy"] == 0.0
    assert "ranking_accuracy" in capsys.readouterr().err
    bad = main(["eval", "preference", "--model", str(path), "--data", str(tmp_path / "missing.jsonl")])
    assert bad == 2 and "--data:" in capsys.readouterr().err
