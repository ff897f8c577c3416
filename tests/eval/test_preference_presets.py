"""`alignkit eval preference` on a preset's rows: conversational records are scored exactly as the
collator encodes them for training, and lists get their list metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignkit.data.collator import PreferenceCollator
from alignkit.data.records import normalize_record
from alignkit.eval.preference import evaluate_preference


def test_conversational_rows_are_scored_as_the_collator_encodes_them(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    user = {"role": "user", "content": "Where was the author born?"}
    row = {
        "chosen": [user, {"role": "assistant", "content": "In Paris."}],
        "rejected": [user, {"role": "assistant", "content": "I don't know."}],
    }  # TRL's implicit-prompt form
    result = evaluate_preference(model, [row], tokenizer=tokenizer, progress=False)
    encoded = PreferenceCollator(tokenizer).encode(normalize_record(row, index=0))
    expected = []
    for prompt_ids, completion in zip(encoded["prompt_ids"], encoded["completion_ids"], strict=True):
        ids = torch.tensor([prompt_ids + completion])
        with torch.no_grad():
            logps = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        start = len(prompt_ids) - 1
        expected.append(float(logps[torch.arange(start, ids.shape[1] - 1), ids[0, start + 1 :]].sum()))
    assert result.rows[0]["logps"] == [pytest.approx(v, abs=1e-6) for v in expected]
    assert result.summary["ranking_accuracy"] == float(expected[0] >= expected[1])


def test_eval_preference_on_a_preset_reports_list_metrics(tiny_model_dir, tmp_path):
    from alignkit.cli import main

    fixtures = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "presets"
    out = tmp_path / "nectar"
    code = main(
        ["eval", "preference", "--model", str(tiny_model_dir), "--ref-model", str(tiny_model_dir),
         "--data", str(fixtures / "nectar.jsonl"), "--dataset-preset", "nectar", "--output-dir", str(out),
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "PREFERENCE_SUMMARY.json").read_text())
    assert summary["num_rows"] == 2 and summary["num_pairs"] == 2 * 21  # 7 distinct ranks per list
    assert 0.0 < summary["ndcg"] <= 1.0 and "list_exact_match" in summary
    assert summary["reward_accuracy"] == 0.0  # policy == reference: every margin is 0
    assert main(["eval", "preference", "--model", str(tiny_model_dir), "--data", str(fixtures / "nectar.jsonl"),
                 "--dataset-preset", "nectar?view=triples"]) == 2  # fmt: skip


def test_one_vs_n_rows_report_top1_likelihood_accuracy(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    from alignkit.data.presets import convert_rows

    fixtures = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "presets"
    rows = convert_rows(json.loads((fixtures / "sdpo.json").read_text()), "sdpo")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    result = evaluate_preference(model, rows, tokenizer=tokenizer, progress=False)
    hits = [float(r["logps"][0] > max(r["logps"][1:])) for r in result.rows]
    assert result.summary["top1_likelihood_accuracy"] == sum(hits) / len(hits)
    # a hit means the chosen item beats each of the 3 others: the pairwise accuracy is at least that
    assert result.summary["ranking_accuracy"] >= result.summary["top1_likelihood_accuracy"]
