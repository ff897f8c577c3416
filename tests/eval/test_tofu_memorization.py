"""ES and EM in the TOFU log (OU's layout): the forget answers' argmax predictions, EOS not counted."""

from __future__ import annotations

import pytest
import torch

from alignkit.eval import evaluate_tofu
from alignkit.eval.protocols import OPEN_UNLEARNING
from alignkit.eval.tofu_data import load_task, task_specs

FAST = OPEN_UNLEARNING.replace(name="ou-fast", max_new_tokens=4)


def test_tofu_logs_es_and_em_of_the_forget_answers(tofu_model, tofu_tokenizer, tofu_dir, tmp_path):
    tok = tofu_tokenizer
    result = evaluate_tofu(
        tofu_model,
        tok,
        data=tofu_dir,
        forget_split="forget01",
        protocol=FAST,
        prompt_format="qa_plain",
        max_examples=3,
        progress=False,
        output_dir=tmp_path,
    )
    logs = result.logs
    assert set(logs["extraction_strength"]["value_by_index"]) == {"0", "1", "2"}
    assert result.summary["extraction_strength"] == logs["extraction_strength"]["agg_value"]
    assert result.summary["exact_memorization"] == logs["exact_memorization"]["agg_value"]
    forget = load_task(tofu_dir, task_specs("forget01")[0], max_rows=3)
    for it in forget.items:
        # Independently: ids(prompt + answer) + EOS, labels after len(ids(prompt)); T' drops the EOS.
        prompt = f"Question: {it.question}\nAnswer: "
        ids = tok(prompt + it.answer)["input_ids"] + [tok.eos_token_id]
        start = len(tok(prompt)["input_ids"])
        with torch.no_grad():
            preds = tofu_model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist()
        labels, pred = ids[start:-1], preds[start - 1 : -2]
        em = sum(a == b for a, b in zip(pred, labels)) / len(labels)
        matched = next((len(labels) - k for k in range(len(labels)) if pred[k:] == labels[k:]), 0)
        entry = str(it.index)
        assert logs["exact_memorization"]["value_by_index"][entry]["score"] == pytest.approx(em)
        assert logs["extraction_strength"]["value_by_index"][entry]["score"] == pytest.approx(
            max(matched, 1) / len(labels)
        )

    # ... and reach the report, `alignkit report`'s comparison table and the model card's metrics.
    from alignkit.eval.logs import METRIC_NAMES, read_results
    from alignkit.eval.report import comparison_rows

    report = (tmp_path / "TOFU_REPORT.md").read_text()
    assert (
        "| Forget Extraction Strength (ES, ou floor) |" in report
        and "| Forget Exact Memorization (EM) |" in report
    )
    header, _ = comparison_rows([{"name": "run", "meta": logs["alignkit"], "summary": result.summary}])
    assert {"forget ES", "forget EM"} <= set(header)
    (source,) = read_results(tmp_path)
    assert source.metrics["extraction_strength"] == pytest.approx(result.summary["extraction_strength"])
    assert METRIC_NAMES["extraction_strength"] == "Extraction Strength (forget)"
