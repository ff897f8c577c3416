"""End to end on the real TOFU files (forget01) with tiny random models.

Generation budgets are cut with ``OPEN_UNLEARNING.replace(max_new_tokens=...)`` where the test is
not about generation; the CLI test runs the real protocol on the first rows of each file.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from alignkit.cli import main
from alignkit.eval import OPEN_UNLEARNING, TOFU_ORIG, evaluate_tofu
from alignkit.eval.metrics import MODEL_UTILITY_COMPONENTS
from alignkit.eval.tofu import (
    EVAL_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    TofuResult,
    _Encoder,
    resolve_prompt_format,
)

FAST = OPEN_UNLEARNING.replace(max_new_tokens=8)
OU_METRICS = {
    "forget_Q_A_Prob",
    "forget_Q_A_PARA_Prob",
    "forget_Q_A_PERT_Prob",
    "forget_Q_A_ROUGE",
    "forget_truth_ratio",
    "forget_quality",
    "retain_Q_A_Prob",
    "retain_Q_A_PARA_Prob",
    "retain_Q_A_PERT_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob",
    "ra_Q_A_PERT_Prob",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "wf_Q_A_Prob",
    "wf_Q_A_PERT_Prob",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
    "model_utility",
}


@pytest.fixture(scope="module")
def retain_run(tofu_retain_dir, tofu_dir, tmp_path_factory):
    """The stand-in retain model evaluated on all 40 forget01 rows (8 rows of the other files)."""
    out = tmp_path_factory.mktemp("retain_run")
    evaluate_tofu(
        tofu_retain_dir,
        data=tofu_dir,
        forget_split="forget01",
        protocol=FAST,
        max_examples=40,
        output_dir=out,
        progress=False,
    )
    return out


def test_cli_writes_every_metric(tofu_model_dir, tofu_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "eval",
            "tofu",
            "--model",
            str(tofu_model_dir),
            "--forget-split",
            "forget01",
            "--retain-model",
            str(tofu_model_dir),
            "--data",
            str(tofu_dir),
            "--output-dir",
            str(out),
            "--max-examples",
            "6",
            "--batch-size",
            "8",
        ]
    )
    assert rc == 0
    logs = json.loads((out / EVAL_FILE).read_text())
    assert set(logs) >= OU_METRICS
    for name in OU_METRICS:
        assert isinstance(logs[name]["agg_value"], float), name
    # open-unlearning's per-item layout
    assert set(logs["forget_truth_ratio"]["value_by_index"]) == {str(i) for i in range(6)}
    assert len(logs["forget_Q_A_PERT_Prob"]["value_by_index"]["0"]["prob"]) == 5
    assert {"generation", "ground_truth", "rougeL_recall"} <= set(
        logs["forget_Q_A_ROUGE"]["value_by_index"]["0"]
    )
    # identical model for "unlearned" and "retain": the KS test cannot tell them apart
    assert logs["forget_quality"]["agg_value"] == 1.0
    meta = logs["alignkit"]
    assert meta["protocol"]["name"] == "open-unlearning" and meta["protocol"]["max_new_tokens"] == 200
    assert meta["n"] == {"forget": 6, "retain": 6, "ra": 6, "wf": 6} and meta["boundary"] == "joint"
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["forget_quality"] == 1.0 and "model_utility" in summary
    report = (out / REPORT_FILE).read_text()
    assert "Forget Quality" in report and "joint" in report
    printed = capsys.readouterr().err
    assert "Forget Quality" in printed and "Model Utility" in printed


def test_python_api_summary_and_cache(tofu_model, tofu_tokenizer, tofu_dir):
    result = evaluate_tofu(
        tofu_model,
        tofu_tokenizer,
        data=tofu_dir,
        forget_split="forget01",
        protocol=FAST,
        max_examples=5,
        progress=False,
    )
    s = result.summary
    for key in (
        "forget_quality",
        "model_utility",
        "forget_rouge",
        "forget_prob",
        "forget_truth_ratio",
        *MODEL_UTILITY_COMPONENTS,
    ):
        assert key in s
    assert s["forget_quality"] is None
    assert "retain-model" in result.meta["forget_quality_note"]
    # Model Utility is the harmonic mean of the 9 components it reports
    comps = [s[k] for k in MODEL_UTILITY_COMPONENTS]
    expected = 0.0 if min(comps) == 0 else 9 / sum(1 / v for v in comps)
    assert s["model_utility"] == pytest.approx(expected)
    assert s["forget_prob"] == result.logs["forget_Q_A_Prob"]["agg_value"]
    # Each (task, prompt, target) was forwarded once; RA/WF's "correct" answer is the answer itself.
    st = result.stats
    assert st["score_sequences"] == st["score_unique_requested"]
    # ra and wf: 5 items each; the MIA re-reads the 5 forget answers (holdout01 is in the data)
    assert st["score_cache_hits"] == 2 * 5 + 5
    assert st["generated_sequences"] == 4 * 5


def test_retain_logs_give_the_same_forget_quality_as_the_retain_model(
    tofu_model_dir, tofu_retain_dir, tofu_dir, retain_run
):
    common = {
        "data": tofu_dir,
        "forget_split": "forget01",
        "protocol": FAST,
        "max_examples": 40,
        "progress": False,
    }
    via_model = evaluate_tofu(tofu_model_dir, retain_model=tofu_retain_dir, **common)
    via_logs = evaluate_tofu(tofu_model_dir, retain_logs=retain_run / EVAL_FILE, **common)
    fq = via_model.summary["forget_quality"]
    assert fq is not None and 0 < fq <= 1
    assert via_logs.summary["forget_quality"] == fq
    assert via_logs.meta["retain_reference"]["kind"] == "logs"
    # a run folder works as well as the file
    assert evaluate_tofu(tofu_model_dir, retain_logs=retain_run, **common).summary["forget_quality"] == fq


def test_retain_log_of_wrong_size_or_split_is_refused(tofu_model_dir, tofu_dir, retain_run, tmp_path):
    common = {"data": tofu_dir, "forget_split": "forget01", "protocol": FAST, "progress": False}
    with pytest.raises(
        ValueError, match=r"has 40 forget truth ratios, but this run evaluates 5 items of forget01_perturbed"
    ):
        evaluate_tofu(tofu_model_dir, retain_logs=retain_run, max_examples=5, **common)
    logs = json.loads((retain_run / EVAL_FILE).read_text())
    meta = dict(logs["alignkit"])
    logs["alignkit"]["forget_split"] = "forget05"
    (tmp_path / "other_split.json").write_text(json.dumps(logs))
    with pytest.raises(ValueError, match="is for forget split 'forget05', but this run evaluates 'forget01'"):
        evaluate_tofu(tofu_model_dir, retain_logs=tmp_path / "other_split.json", **common)
    # An open-unlearning log has no metadata: the reference answers of its ROUGE entries give the split away.
    del logs["alignkit"]
    for i, entry in enumerate(logs["forget_Q_A_ROUGE"]["value_by_index"].values()):
        entry["ground_truth"] = f"Some other author number {i} wrote other books."
    (tmp_path / "ou_other.json").write_text(json.dumps(logs))
    with pytest.raises(ValueError, match="looks like a log of another forget split"):
        evaluate_tofu(tofu_model_dir, retain_logs=tmp_path / "ou_other.json", max_examples=40, **common)
    logs["alignkit"] = {**meta, "protocol": {**meta["protocol"], "boundary": "separate"}}
    (tmp_path / "other_boundary.json").write_text(json.dumps(logs))
    with pytest.raises(ValueError, match=r"differs from this run in boundary='separate' \(here 'joint'\)"):
        evaluate_tofu(tofu_model_dir, retain_logs=tmp_path / "other_boundary.json", max_examples=40, **common)
    logs["alignkit"] = {**meta, "prompt_format": {**meta["prompt_format"], "system_prompt": "Be brief."}}
    (tmp_path / "other_format.json").write_text(json.dumps(logs))
    with pytest.raises(ValueError, match="used prompt format .* Forget Quality needs the same template"):
        evaluate_tofu(tofu_model_dir, retain_logs=tmp_path / "other_format.json", max_examples=40, **common)
    (tmp_path / "not_tofu.json").write_text(json.dumps({"mia_min_k": {"agg_value": 0.5}}))
    with pytest.raises(ValueError, match="no 'forget_truth_ratio' entry"):
        evaluate_tofu(tofu_model_dir, retain_logs=tmp_path / "not_tofu.json", **common)
    with pytest.raises(ValueError, match="either `retain_model` or `retain_logs`"):
        evaluate_tofu(tofu_model_dir, retain_logs=retain_run, retain_model=tofu_model_dir, **common)


def test_open_unlearning_log_without_metadata_is_accepted(tofu_model_dir, tofu_dir, retain_run, tmp_path):
    logs = json.loads((retain_run / EVAL_FILE).read_text())
    del logs["alignkit"]  # as open-unlearning writes it
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(logs))
    common = {
        "data": tofu_dir,
        "forget_split": "forget01",
        "protocol": FAST,
        "max_examples": 40,
        "progress": False,
    }
    a = evaluate_tofu(tofu_model_dir, retain_logs=tmp_path, **common)
    b = evaluate_tofu(tofu_model_dir, retain_logs=retain_run, **common)
    assert a.summary["forget_quality"] == b.summary["forget_quality"]


def test_chat_format_needs_a_chat_template(tofu_model_dir, tofu_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tofu_model_dir)
    tok.chat_template = None
    with pytest.raises(
        ValueError, match="prompt format is 'chat' but the tokenizer of .* has no chat template"
    ):
        evaluate_tofu(
            tofu_model_dir, tok, data=tofu_dir, forget_split="forget01", prompt_format="chat", progress=False
        )
    # "auto" falls back to the plain QA format for such a tokenizer
    assert resolve_prompt_format(None, tok).mode == "tags"


def test_protocol_differences_in_the_encodings(tofu_tokenizer):
    """tofu-orig scores the answer tag as part of the answer and generates without it (§5.5)."""
    tags = resolve_prompt_format("qa_plain", tofu_tokenizer)
    ou, orig = _Encoder(tofu_tokenizer, tags, OPEN_UNLEARNING), _Encoder(tofu_tokenizer, tags, TOFU_ORIG)
    q, a = "Who wrote the play 'Romeo and Juliet'?", "William Shakespeare"
    assert ou.score_prompt(q) == f"Question: {q}\nAnswer: " and ou.score_target(q, a) == a
    assert orig.score_prompt(q) == f"Question: {q}\n" and orig.score_target(q, a) == f"Answer: {a}"
    assert tofu_tokenizer.decode(orig.generation_prompt_ids(q)) == f"Question: {q}\n"
    assert ou.rouge_reference(q, a) == orig.rouge_reference(q, a) == a
    # chat mode (OU): the target carries the template's end-of-turn text after the answer
    chat = _Encoder(tofu_tokenizer, resolve_prompt_format("chat", tofu_tokenizer), OPEN_UNLEARNING)
    assert chat.score_target(q, a) == a + "<|end|>" and chat.max_length is None
    assert chat.rouge_reference(q, a) == a


def test_tofu_orig_protocol_runs(tofu_model, tofu_tokenizer, tofu_dir, tmp_path):
    result = evaluate_tofu(
        tofu_model,
        tofu_tokenizer,
        data=tofu_dir,
        forget_split="forget01",
        protocol=TOFU_ORIG.replace(generation_max_length=60),
        prompt_format="qa_plain",
        max_examples=4,
        progress=False,
        output_dir=tmp_path,
    )
    meta = result.meta
    assert meta["protocol"]["name"] == "tofu-orig" and meta["protocol"]["max_eval_rows"] == 300
    assert meta["prompt_format"]["mode"] == "tags"
    assert result.summary["forget_quality"] is None and result.summary["model_utility"] is not None
    again = TofuResult.load(tmp_path)
    assert again.summary == result.summary


def test_separate_boundary_is_recorded(tofu_model, tofu_tokenizer, tofu_dir, tmp_path):
    common = {"data": tofu_dir, "forget_split": "forget01", "max_examples": 3, "progress": False}
    joint = evaluate_tofu(tofu_model, tofu_tokenizer, protocol=FAST, **common)
    sep = evaluate_tofu(
        tofu_model, tofu_tokenizer, protocol=FAST.replace(boundary="separate"), output_dir=tmp_path, **common
    )
    assert sep.meta["boundary"] == "separate" and joint.meta["boundary"] == "joint"
    # the chat template ends the prompt in a special token, so no merge: same tokens, same scores
    assert sep.summary["forget_prob"] == pytest.approx(joint.summary["forget_prob"], abs=1e-6)
    assert "not comparable with published numbers" in (tmp_path / REPORT_FILE).read_text()
    plain = {"prompt_format": "qa_plain", "protocol": FAST, **common}
    joint_qa = evaluate_tofu(tofu_model, tofu_tokenizer, **plain)
    plain["protocol"] = FAST.replace(boundary="separate")
    sep_qa = evaluate_tofu(tofu_model, tofu_tokenizer, **plain)
    # "Answer: " + answer: the merged first answer token is scored only with the separate boundary
    assert sep_qa.summary["forget_prob"] != pytest.approx(joint_qa.summary["forget_prob"], abs=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown TOFU protocol 'muse'"):
        evaluate_tofu("unused", "unused", protocol="muse")
    with pytest.raises(ValueError, match="`max_new_tokens` must be >= 1"):
        OPEN_UNLEARNING.replace(max_new_tokens=0)
