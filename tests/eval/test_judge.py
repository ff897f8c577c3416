"""Judges and win rates under both protocols of "Pairwise or Pointwise?", with scripted judges whose
verdicts are known in advance, plus the model-backed judges and the CLI on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.eval.judge import (
    VERDICTS,
    Judge,
    JudgeError,
    callable_judge,
    chat_model_judge,
    judge_generations,
    load_judge,
    reward_model_judge,
    win_rate,
)

PROMPTS = ["p0", "p1", "p2", "p3"]
POLICY = ["a long answer", "x", "same", "a very long answer indeed"]
REFERENCE = ["short", "a longer one", "same", "tiny"]


def longer(prompt, first, second):
    """A consistent pairwise judge: the longer answer wins, equal lengths tie."""
    return "first" if len(first) > len(second) else "second" if len(second) > len(first) else "tie"


def length_score(prompt, answer):
    return float(len(answer))


def test_pointwise_scores_each_answer_alone():
    result = win_rate(callable_judge(length_score, "pointwise"), PROMPTS, POLICY, REFERENCE, "pointwise")
    assert [r["outcome"] for r in result.rows] == ["win", "loss", "tie", "win"]
    s = result.summary
    assert (s["wins"], s["ties"], s["losses"]) == (2, 1, 1)
    assert s["win_rate"] == pytest.approx((2 + 0.5) / 4)
    assert s["policy_score_mean"] == pytest.approx(sum(map(len, POLICY)) / 4)
    assert "flip_rate" not in s


def test_pairwise_consistent_judge_never_flips():
    result = win_rate(callable_judge(longer, "pairwise"), PROMPTS, POLICY, REFERENCE, "pairwise")
    assert [r["outcome"] for r in result.rows] == ["win", "loss", "tie", "win"]
    assert result.summary["flip_rate"] == 0.0
    assert result.summary["win_rate"] == pytest.approx(2.5 / 4)
    # the judge named the first answer in 3 of the 8 verdicts (the longer answer came first 3 times)
    assert result.summary["first_position_rate"] == pytest.approx(3 / 8)


def test_pairwise_position_biased_judge_flips_into_ties():
    def always_first(prompt, first, second):
        return "A"  # the letter form is read as "first"

    result = win_rate(callable_judge(always_first, "pairwise"), PROMPTS, POLICY, REFERENCE, "pairwise")
    assert all(r["flipped"] and r["outcome"] == "tie" for r in result.rows)
    s = result.summary
    assert s["flip_rate"] == 1.0 and s["first_position_rate"] == 1.0 and s["win_rate"] == 0.5


def test_pairwise_half_biased_judge():
    """Prefers the policy when it comes first and is longer; otherwise always says 'second'."""

    def biased(prompt, first, second):
        return "first" if first in POLICY and len(first) > len(second) else "second"

    rows = win_rate(callable_judge(biased, "pairwise"), PROMPTS, POLICY, REFERENCE, "pairwise").rows
    # p0: forward win, backward says "second" = policy -> win: consistent win
    # p1: forward "second" = loss, backward "second" = policy = win -> flip -> tie
    assert [(r["flipped"], r["outcome"]) for r in rows] == [
        (False, "win"),
        (True, "tie"),
        (True, "tie"),
        (False, "win"),
    ]


def test_judges_outside_their_protocol_are_named():
    with pytest.raises(JudgeError, match="answered 'maybe'"):
        win_rate(callable_judge(lambda p, a, b: "maybe", "pairwise"), PROMPTS, POLICY, REFERENCE)
    with pytest.raises(JudgeError, match="scored 'high'"):
        win_rate(callable_judge(lambda p, a: "high", "pointwise"), PROMPTS, POLICY, REFERENCE, "pointwise")
    with pytest.raises(JudgeError, match="gives no pointwise score"):
        Judge("pairs only", compare=longer).check("pointwise")


def test_load_judge_from_a_python_path():
    judge = load_judge("python:tests.eval.test_judge:longer", "pairwise")
    assert judge.compare("p", "aa", "a") == "first"
    with pytest.raises(JudgeError, match="cannot import 'nope'"):
        load_judge("python:tests.eval.test_judge:nope", "pairwise")
    with pytest.raises(JudgeError, match="expected python:module:function"):
        load_judge("gpt4", "pairwise")


# ------------------------------------------------------------------------------ model-backed


def test_same_model_twice_wins_exactly_half(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    from alignkit.data.records import normalize_record

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = [
        {"prompt": "Where was the author born?", "chosen": " Paris", "rejected": " Rome"},
        {"prompt": [{"role": "user", "content": "Hello there!"}], "completion": [
            {"role": "assistant", "content": "Hello."}]},
    ]  # fmt: skip
    records = [normalize_record(r, index=i) for i, r in enumerate(rows)]
    for protocol, judge in (("pairwise", longer), ("pointwise", length_score)):
        result = judge_generations(
            model, model, tokenizer, records, load_judge(judge, protocol), protocol=protocol, max_new_tokens=6
        )
        assert result.summary["win_rate"] == 0.5 and result.summary["ties"] == 2
        assert all(r["policy"] == r["reference"] for r in result.rows)


def test_chat_and_reward_model_judges_on_a_tiny_model(tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    chat = chat_model_judge(str(tiny_model_dir))
    score = chat.score("Where was the author born?", "In Paris.")
    assert 1.0 <= score <= 9.0
    for a, b in (("In Paris.", "I don't know."), ("Hello.", "Goodbye.")):
        assert chat.compare("Where was the author born?", a, b) in VERDICTS
    # an untrained reward head on the same tiny backbone: the pairwise verdict is antisymmetric in
    # the order and agrees with the pointwise scores
    with pytest.raises(JudgeError, match="has 2 outputs"):
        reward_model_judge(str(tiny_model_dir))  # a causal LM folder read as a 2-label classifier
    rm_dir = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)
    reward = reward_model_judge(str(rm_dir))
    a, b = reward.score("Question?", "In Paris."), reward.score("Question?", "I don't know.")
    forward = reward.compare("Question?", "In Paris.", "I don't know.")
    backward = reward.compare("Question?", "I don't know.", "In Paris.")
    assert forward == ("first" if a > b else "second" if b > a else "tie")
    assert {forward, backward} in ({"first", "second"}, {"tie"})


def test_eval_preference_command_reports_the_win_rate(tiny_model_dir, tmp_path, capsys):
    from alignkit.cli import main

    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": p, "chosen": " Paris.", "rejected": " Rome."}) + "\n"
            for p in ("Where was the author born?", "The capital of France is")
        )
    )
    out = tmp_path / "out"
    args = ["eval", "preference", "--model", str(tiny_model_dir), "--data", str(data), "--output-dir", str(out),
            "--no-progress", "--judge", "python:tests.eval.test_judge:longer", "--judge-max-new-tokens", "4"]  # fmt: skip
    assert main(args) == 2 and "add --ref-model" in capsys.readouterr().err
    assert main([*args, "--ref-model", str(tiny_model_dir)]) == 0
    summary = json.loads((out / "PREFERENCE_SUMMARY.json").read_text())
    assert (
        summary["win_rate"] == 0.5 and summary["flip_rate"] == 0.0 and summary["judge_protocol"] == "pairwise"
    )
    rows = json.loads((out / "PREFERENCE_EVAL.json").read_text())["rows"]
    assert all(r["judge"]["outcome"] == "tie" for r in rows)
    assert Path(out / "ranking_accuracy.png").is_file()
