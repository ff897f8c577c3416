"""`alignkit eval preference` for reasoning alignment: assessment accuracy and verifier answer accuracy."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit.data.synthetic.reasoning import arithmetic_task
from alignkit.eval.preference import evaluate_preference
from alignkit.models import build_tiny_model


@pytest.fixture(scope="module")
def reasoning_model(tmp_path_factory):
    task = arithmetic_task(6, seed=4)
    texts = [r["question"] + " " + r["answer"] for r in task.records]
    return build_tiny_model(texts, tmp_path_factory.mktemp("reasoning_model"), vocab_size=200, seed=0), task


def _token_mean(model, tokenizer, prompt, completion):
    ids_p = tokenizer(prompt)["input_ids"]
    ids_c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([ids_p + ids_c])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
    picked = logps[torch.arange(len(ids_p) - 1, ids.shape[1] - 1), ids[0, len(ids_p) :]]
    return float(picked.mean())


def test_assessment_and_answer_accuracy(reasoning_model):
    path, task = reasoning_model
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    lists = []
    for row, final in zip(task.records, task.finals):
        wrong = row["answer"].rsplit("#", 1)[0] + f"# {final + 3}"
        lists.append(
            {"prompt": row["question"], "completions": [row["answer"], wrong, "#### 0"], "labels": [1, 0, 0]}
        )
    result = evaluate_preference(model, lists, tokenizer=tokenizer, progress=False)
    expected = []
    for r in lists:
        s = [_token_mean(model, tokenizer, r["prompt"], c) for c in r["completions"]]
        expected += [s[0] > s[1], s[0] > s[2]]
    assert result.summary["assessment_accuracy"] == pytest.approx(sum(expected) / len(expected))
    # Answer accuracy: a verifier that accepts everything gives 1, one that rejects everything 0; the
    # built-in labels the greedy answers of the untrained model (no right answer expected, but in [0, 1]).
    qa = task.records
    assert (
        evaluate_preference(
            model, qa, tokenizer=tokenizer, progress=False, verifier=lambda r, c: True
        ).summary["answer_accuracy"]
        == 1.0
    )
    seen = []
    evaluate_preference(
        model, qa, tokenizer=tokenizer, progress=False, verifier=lambda r, c: seen.append(r) or False
    )
    assert seen == qa  # the verifier gets each row as the data gave it
    accuracy = evaluate_preference(
        model, qa, tokenizer=tokenizer, progress=False, verifier="arithmetic"
    ).summary
    assert 0.0 <= accuracy["answer_accuracy"] <= 1.0


def test_eval_preference_verifier_flag(reasoning_model, tmp_path, capsys):
    from alignkit.cli import main

    path, task = reasoning_model
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in task.records))
    out = tmp_path / "out"
    args = [
        "eval",
        "preference",
        "--model",
        str(path),
        "--data",
        str(data),
        "--no-progress",
        "--output-dir",
        str(out),
    ]
    assert main([*args, "--verifier", "arithmetic"]) == 0
    assert "answer_accuracy" in json.loads((out / "PREFERENCE_SUMMARY.json").read_text())
    assert main([*args, "--verifier", "gsm9k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: unknown verifier 'gsm9k'")
