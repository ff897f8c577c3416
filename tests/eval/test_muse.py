"""MUSE-News evaluation: protocols, ROUGE aggregation, references, data checks, PrivLeak, end to end.

Spec: ``shared/design/benchmarks.md`` §3. The end-to-end tests run a tiny random Llama on the
20-item development sample in ``../shared/data/muse_news_sample`` (numbers are meaningless there;
the tests check wiring, layout and the invariants that hold for any model).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from alignkit.commands.eval import add_muse_parser
from alignkit.eval import mia
from alignkit.eval.muse import (
    MUSE_PROTOCOLS,
    evaluate_muse,
    get_muse_protocol,
    joint_label_reference,
    knowmem_prompt,
    knowmem_reference,
    load_muse_data,
    retain_auc_from_logs,
    rouge_log,
    verbmem_reference,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT.parent / "shared" / "data" / "muse_news_sample"
OU, ORIG = MUSE_PROTOCOLS["open-unlearning"], MUSE_PROTOCOLS["muse-orig"]
SUMMARY_KEYS = {
    "forget_knowmem_ROUGE",
    "forget_verbmem_ROUGE",
    "retain_knowmem_ROUGE",
    "privleak",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "mia_loss",
    "mia_zlib",
    "extraction_strength",
    "exact_memorization",
}


@pytest.fixture(scope="module")
def sample() -> Path:
    if not SAMPLE.is_dir():
        pytest.skip(
            f"MUSE sample not available: {SAMPLE} is absent (it sits beside the repo only in dev checkouts)"
        )
    return SAMPLE


@pytest.fixture(scope="module")
def tiny_dir(sample, tmp_path_factory) -> Path:
    from alignkit.models import build_tiny_model

    ds = load_muse_data(sample)
    texts = json.loads((sample / "raw" / "forget.json").read_text()) + [
        f"{r['question']} {r['answer']}" for r in ds.knowmem_forget + ds.knowmem_retain
    ]
    return build_tiny_model(texts, tmp_path_factory.mktemp("muse_tiny"), vocab_size=512, seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval(), AutoTokenizer.from_pretrained(tiny_dir)


# ----------------------------------------------------------------------------------------------
# Protocols
# ----------------------------------------------------------------------------------------------


def test_protocols_encode_the_spec_differences():
    assert (OU.use_stemmer, ORIG.use_stemmer) == (True, False)
    assert OU.rouge_key == ORIG.rouge_key == "rougeL_f1"  # MUSE reports F1 under both
    assert OU.knowmem_max_new_tokens == ORIG.knowmem_max_new_tokens == 32
    assert OU.verbmem_max_new_tokens == ORIG.verbmem_max_new_tokens == 128
    assert OU.knowmem_stop_strings == ORIG.knowmem_stop_strings == ("\n\n", "\nQuestion", "Question:")
    assert (OU.knowmem_max_length, ORIG.knowmem_max_length) == (512, None)
    assert (OU.knowmem_reference, ORIG.knowmem_reference) == ("prompt_removed", "answer")
    assert (OU.verbmem_reference, ORIG.verbmem_reference) == ("joint_labels", "gt_truncated")
    assert OU.privleak_k == ORIG.privleak_k == 0.4
    assert (OU.privleak_max_tokens, ORIG.privleak_max_tokens) == (2048, None)
    assert (OU.drop_last_token, ORIG.drop_last_token) == (True, False)
    assert (OU.min_k_count, ORIG.min_k_count) == ("at_least_one", "floor")
    assert (OU.auc_convention, ORIG.auc_convention) == ("usual", "muse")
    assert (OU.privleak_eps, ORIG.privleak_eps) == (1e-10, 0.0)


def test_get_protocol_names_and_errors():
    assert get_muse_protocol("open_unlearning") is OU and get_muse_protocol("muse_original") is ORIG
    assert get_muse_protocol(ORIG) is ORIG
    with pytest.raises(ValueError, match="Unknown MUSE protocol 'tofu'"):
        get_muse_protocol("tofu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        OU.use_stemmer = False  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# ROUGE aggregation and references
# ----------------------------------------------------------------------------------------------


def test_rouge_log_on_known_strings_under_both_stemmer_settings():
    refs = ["The cats were running", "Paris", "the cat sat on the mat"]
    gens = ["cat runs", "paris!", "the mat sat"]
    # Item 0, stemmer on: ref [the, cat, were, run], gen [cat, run]: LCS 2, P = 1, R = 1/2, F1 = 2/3.
    #         stemmer off: ref [the, cats, were, running], gen [cat, runs]: no common token, F1 = 0.
    # Item 1: case and punctuation are dropped by rouge_score's tokenizer: F1 = 1.
    # Item 2: ref [the, cat, sat, on, the, mat], gen [the, mat, sat]: LCS 2 ("the sat"),
    #         R = 2/6, P = 2/3, F1 = 2 (1/3)(2/3) / (1/3 + 2/3) = 4/9.
    on = rouge_log(refs, gens, ["q0", "q1", "q2"], use_stemmer=OU.use_stemmer)
    off = rouge_log(refs, gens, ["q0", "q1", "q2"], use_stemmer=ORIG.use_stemmer)
    assert [on["value_by_index"][i]["rougeL_f1"] for i in "012"] == pytest.approx([2 / 3, 1.0, 4 / 9])
    assert [off["value_by_index"][i]["rougeL_f1"] for i in "012"] == pytest.approx([0.0, 1.0, 4 / 9])
    assert on["agg_value"] == pytest.approx((2 / 3 + 1 + 4 / 9) / 3)
    assert off["agg_value"] == pytest.approx((0 + 1 + 4 / 9) / 3)
    assert on["value_by_index"]["2"]["rougeL_recall"] == pytest.approx(1 / 3)
    assert on["value_by_index"]["0"] | {"input": "q0"} == {
        "rouge1_recall": pytest.approx(0.5),
        "rougeL_f1": pytest.approx(2 / 3),
        "rougeL_recall": pytest.approx(0.5),
        "input": "q0",
        "ground_truth": "The cats were running",
        "generation": "cat runs",
    }
    # An empty generation (cut entirely by a stop string) scores 0.
    assert rouge_log(["Paris"], [""], ["q"], use_stemmer=True)["agg_value"] == 0.0


def test_knowmem_prompt_is_the_muse_string():
    shots = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    expected = "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q?\nAnswer: "
    assert knowmem_prompt(None, "Q?", shots) == expected


def test_knowmem_reference_is_the_whole_answer_on_a_merging_tokenizer(sample, tiny):
    """OU removes the decoded prompt from the decoded prompt + answer: no answer token is lost, even
    where the prompt's trailing space merges into the first answer token (issue 11 §1)."""
    _, tok = tiny
    ds = load_muse_data(sample, max_examples=6)
    no_trunc = dataclasses.replace(OU, knowmem_max_length=None)
    merged = 0
    for row in ds.knowmem_forget:
        prompt = knowmem_prompt(tok, row["question"], ds.knowmem_forget_icl)
        assert knowmem_reference(tok, prompt, row["answer"], ORIG) == row["answer"]
        assert knowmem_reference(tok, prompt, row["answer"], no_trunc) == row["answer"].strip()
        # The joint labels (ids(prompt + answer) after len(ids(prompt))) do lose the first token here.
        labels = tok(prompt + row["answer"])["input_ids"][len(tok(prompt)["input_ids"]) :]
        merged += tok.decode(labels, skip_special_tokens=True).strip() != row["answer"].strip()
    # The prompt ends in a lone "Ġ" that merges into the answer's first token jointly (spec §1.1).
    assert merged > 0
    # With OU's 512-token limit the long tiny-tokenizer prompts leave no reference at all.
    prompt = knowmem_prompt(tok, ds.knowmem_forget[0]["question"], ds.knowmem_forget_icl)
    assert len(tok(prompt)["input_ids"]) > 512
    assert knowmem_reference(tok, prompt, ds.knowmem_forget[0]["answer"], OU) == ""


def test_verbmem_reference_protocols(sample, tiny):
    _, tok = tiny
    ds = load_muse_data(sample, max_examples=3)
    for row in ds.verbmem_forget:
        # OU: the full gt (prompt + " " + gt, labels after the prompt), stripped.
        assert verbmem_reference(tok, row["prompt"], row["gt"], OU) == row["gt"].strip()
        # MUSE-orig: gt cut to its first 128 ids (this tokenizer adds no BOS, so 128 gt tokens).
        ref = verbmem_reference(tok, row["prompt"], row["gt"], ORIG)
        gt_ids = tok(row["gt"])["input_ids"]
        assert len(gt_ids) > 128
        assert ref == tok.decode(gt_ids[:128], skip_special_tokens=True)
        assert row["gt"].startswith(ref) and len(ref) < len(row["gt"])
    # OU's 2048-token cap applies to the gt tokens after the prompt.
    assert joint_label_reference(tok, "abc", " def ghi", max_length=len(tok("abc")["input_ids"])) == ""


# ----------------------------------------------------------------------------------------------
# Data loading and its errors
# ----------------------------------------------------------------------------------------------


def test_load_local_sample(sample):
    ds = load_muse_data(sample)
    assert ds.sizes() == {
        "knowmem_forget": 20,
        "knowmem_forget_icl": 10,
        "knowmem_retain": 20,
        "knowmem_retain_icl": 10,
        "verbmem_forget": 20,
        "privleak_forget": 20,
        "privleak_holdout": 20,
    }
    # The GitHub names of the retain QA files are found when the HF names are absent.
    assert ds.sources["knowmem_retain"].endswith("knowmem/retain2_qa.json")
    assert isinstance(ds.privleak_forget[0], str) and set(ds.verbmem_forget[0]) == {"prompt", "gt"}
    small = load_muse_data(sample, max_examples=5)
    assert small.sizes()["knowmem_forget"] == 5 and small.sizes()["knowmem_forget_icl"] == 10  # shots kept


def _copy_sample(sample: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "muse"
    shutil.copytree(sample, dst)
    for path in dst.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared copy is read-only
    return dst


def test_load_errors_name_file_row_and_field(sample, tmp_path):
    root = _copy_sample(sample, tmp_path)
    (root / "privleak" / "holdout.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"privleak/holdout\.json"):
        load_muse_data(root)
    shutil.copy(sample / "privleak" / "holdout.json", root / "privleak" / "holdout.json")

    rows = json.loads((root / "knowmem" / "forget_qa.json").read_text())
    del rows[2]["answer"]
    (root / "knowmem" / "forget_qa.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"forget_qa\.json row 2: missing field 'answer'"):
        load_muse_data(root)
    rows[2]["answer"] = 1472
    (root / "knowmem" / "forget_qa.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"forget_qa\.json row 2: field 'answer' must be a string"):
        load_muse_data(root)
    shutil.copy(sample / "knowmem" / "forget_qa.json", root / "knowmem" / "forget_qa.json")

    texts = json.loads((root / "privleak" / "forget.json").read_text())
    texts[4] = {"body": texts[4]}
    (root / "privleak" / "forget.json").write_text(json.dumps(texts))
    with pytest.raises(ValueError, match=r"privleak/forget\.json row 4: expected a string"):
        load_muse_data(root)

    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_muse_data("./no-such-muse-dir")
    with pytest.raises(ValueError, match="max_examples"):
        load_muse_data(sample, max_examples=0)


def test_hub_failure_is_explained(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(
        FileNotFoundError, match=r"Could not load MUSE split knowmem/forget_qa .*local folder"
    ):
        load_muse_data("muse-bench/no-such-dataset-for-alignkit-tests")


# ----------------------------------------------------------------------------------------------
# PrivLeak reference from retain logs
# ----------------------------------------------------------------------------------------------


def _retain_log(auc_value, n_forget=3, n_holdout=3, **extra):
    items = lambda n: {str(i): {"score": 1.0} for i in range(n)}  # noqa: E731
    entry = {
        "agg_value": auc_value,
        "forget": {"value_by_index": items(n_forget)},
        "holdout": {"value_by_index": items(n_holdout)},
    }
    return {"mia_min_k": {**entry, **extra}}


def test_retain_auc_from_logs_checks(tmp_path):
    assert retain_auc_from_logs(_retain_log(0.7), n_forget=3, n_holdout=3, protocol=OU) == 0.7
    # A MUSE-convention log (written under muse-orig) is converted back to the usual AUC.
    assert retain_auc_from_logs(
        _retain_log(0.3, auc_convention="muse"), n_forget=3, n_holdout=3, protocol=ORIG
    ) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="mia_min_k.forget has 100 items but this run scores 3"):
        retain_auc_from_logs(_retain_log(0.7, n_forget=100), n_forget=3, n_holdout=3, protocol=OU)
    with pytest.raises(ValueError, match="computed with k=0.2"):
        retain_auc_from_logs(_retain_log(0.7, k=0.2), n_forget=3, n_holdout=3, protocol=OU)
    with pytest.raises(ValueError, match=r"no numeric 'mia_min_k.agg_value'.*forget_knowmem_ROUGE"):
        retain_auc_from_logs(
            {"forget_knowmem_ROUGE": {"agg_value": 0.3}}, n_forget=3, n_holdout=3, protocol=OU
        )
    with pytest.raises(ValueError, match="not an AUC"):
        retain_auc_from_logs(_retain_log(1.5), n_forget=3, n_holdout=3, protocol=OU)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        retain_auc_from_logs(tmp_path / "missing.json", n_forget=3, n_holdout=3, protocol=OU)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        retain_auc_from_logs(bad, n_forget=3, n_holdout=3, protocol=OU)
    other = _retain_log(0.7) | {"alignkit": {"protocol": ORIG.to_dict()}}
    with pytest.raises(ValueError, match="different PrivLeak settings"):
        retain_auc_from_logs(other, n_forget=3, n_holdout=3, protocol=OU)


def test_wrong_size_retain_log_fails_before_any_model_runs(sample):
    # The model path does not exist: the retain-log check must come first.
    with pytest.raises(ValueError, match="has 100 items but this run scores 2 privleak/forget"):
        evaluate_muse("no/such-model", data=sample, retain_logs=_retain_log(0.6, 100, 100), max_examples=2)


def test_privleak_sign_on_a_model_that_memorised_the_forget_set(sample, tiny_dir):
    """Fine-tune on the forget windows: Min-K% AUC rises, PrivLeak against the untouched model < 0."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ds = load_muse_data(sample, max_examples=4)
    retrained = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    memoriser = AutoModelForCausalLM.from_pretrained(tiny_dir)
    ids = torch.tensor([mia.raw_text_ids(tok, t, max_tokens=48)[0] for t in ds.privleak_forget])
    opt = torch.optim.AdamW(memoriser.parameters(), lr=1e-2)  # high rate: a few steps must overfit
    memoriser.train()
    for _ in range(25):
        opt.zero_grad()
        memoriser(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    memoriser.eval()
    kw = dict(attacks=["min_k"], max_tokens=48)
    auc_mem = mia.run_mia(memoriser, tok, ds.privleak_forget, ds.privleak_holdout, **kw)["mia_min_k"][
        "agg_value"
    ]
    auc_ret = mia.run_mia(retrained, tok, ds.privleak_forget, ds.privleak_holdout, **kw)["mia_min_k"][
        "agg_value"
    ]
    assert auc_mem == 1.0 > auc_ret  # every forget window now looks more familiar than every holdout one
    assert mia.privleak(auc_mem, auc_ret) < 0  # under-unlearned, as MUSE signs it
    assert mia.privleak(auc_ret, auc_ret) == 0.0


# ----------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------


def test_evaluate_muse_end_to_end(sample, tiny, tmp_path):
    model, tok = tiny
    # OU settings, shortened for a CPU test: no 512 cut of the long tiny-tokenizer prompts, and
    # 256-token PrivLeak windows.
    proto = dataclasses.replace(OU, name="ou-short", knowmem_max_length=None, privleak_max_tokens=256)
    result = evaluate_muse(
        model,
        tok,
        data=sample,
        retain_model=model,
        protocol=proto,
        max_examples=3,
        progress=False,
        output_dir=tmp_path,
    )
    assert set(result.summary) == SUMMARY_KEYS
    assert result.summary["privleak"] == 0.0  # the model is its own retrained model
    for name, value in result.summary.items():
        assert math.isfinite(value), name
        if name != "privleak":
            assert 0.0 <= value <= 1.0, name
    logs = result.logs
    for name in ("forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "forget_verbmem_ROUGE"):
        assert set(logs[name]["value_by_index"]) == {"0", "1", "2"}
    ds = load_muse_data(sample, max_examples=3)
    for i, row in enumerate(ds.knowmem_forget):
        item = logs["forget_knowmem_ROUGE"]["value_by_index"][str(i)]
        assert item["ground_truth"] == knowmem_reference(tok, item["input"], row["answer"], proto)
        assert "\n\n" not in item["generation"] and "Question:" not in item["generation"]
    assert set(logs["mia_min_k"]["forget"]["value_by_index"]) == {"0", "1", "2"}
    # ES/EM: an independent teacher-forced pass over prompt + " " + gt (OU's MUSE_forget_verbmem).
    for i, row in enumerate(ds.verbmem_forget):
        n_prompt = len(tok(row["prompt"])["input_ids"])
        ids = tok(row["prompt"] + " " + row["gt"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            preds = model(input_ids=ids).logits[0].argmax(-1)
        # T': labels at positions n_prompt .. L-2 (the last gt token is not counted), predicted at -1.
        labels, pred = ids[0, n_prompt:-1].tolist(), preds[n_prompt - 1 : -2].tolist()
        matched = next((len(labels) - k for k in range(len(labels)) if pred[k:] == labels[k:]), 0)
        assert logs["extraction_strength"]["value_by_index"][str(i)]["score"] == pytest.approx(
            max(matched, 1) / len(labels)
        )
        em = sum(a == b for a, b in zip(pred, labels)) / len(labels)
        assert logs["exact_memorization"]["value_by_index"][str(i)]["score"] == pytest.approx(em)
    assert logs["privleak"]["ref_source"] == "retain_model"
    assert (
        logs["alignkit"]["protocol"]["name"] == "ou-short"
        and logs["alignkit"]["n_items"]["privleak_holdout"] == 3
    )
    # The saved log serves as a retain log for the same run: same AUC back.
    assert retain_auc_from_logs(
        json.loads((tmp_path / "MUSE_EVAL.json").read_text()), n_forget=3, n_holdout=3, protocol=proto
    ) == pytest.approx(result.summary["mia_min_k"])
    assert json.loads((tmp_path / "MUSE_SUMMARY.json").read_text()) == pytest.approx(result.summary)
    report = (tmp_path / "MUSE_REPORT.md").read_text()
    assert "| privleak | 0.0000 |" in report and "retain_model" in report


def test_evaluate_muse_orig_without_reference_warns(sample, tiny):
    model, tok = tiny
    proto = dataclasses.replace(ORIG, name="orig-short", privleak_max_tokens=256)
    with pytest.warns(UserWarning, match="taken as 0.5"):
        result = evaluate_muse(model, tok, data=sample, protocol=proto, max_examples=2, progress=False)
    auc_muse = result.summary["mia_min_k"]  # reported in MUSE's convention under muse-orig
    assert result.logs["mia_min_k"]["auc_convention"] == "muse"
    assert auc_muse == pytest.approx(result.logs["privleak"]["auc_muse"])
    assert result.summary["privleak"] == pytest.approx((auc_muse - 0.5) / 0.5 * 100)
    assert result.logs["alignkit"]["privleak_reference"]["source"] == "default_0.5"
    with pytest.raises(ValueError, match="not both"):
        evaluate_muse(model, tok, data=sample, retain_model=model, retain_logs={}, progress=False)


def _muse_args(argv):
    parser = argparse.ArgumentParser(prog="alignkit eval")
    add_muse_parser(parser.add_subparsers(dest="benchmark"))
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def cli_run(sample, tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("muse_cli")
    args = _muse_args(
        ["muse", "--model", str(tiny_dir), "--retain-model", str(tiny_dir), "--data", str(sample)]
        + ["--output-dir", str(out), "--max-examples", "2", "--batch-size", "2"]
    )
    # The tiny tokenizer makes the few-shot prompts longer than OU's 512-token limit: said loudly.
    with pytest.warns(UserWarning, match="few-shot prompts have >= 512 tokens"):
        rc = args.func(args)
    return rc, out


def test_run_muse_command_writes_every_metric(cli_run):
    rc, out = cli_run
    assert rc == 0
    summary = json.loads((out / "MUSE_SUMMARY.json").read_text())
    assert set(summary) == SUMMARY_KEYS and summary["privleak"] == 0.0
    logs = json.loads((out / "MUSE_EVAL.json").read_text())
    assert logs["alignkit"]["protocol"]["name"] == "open-unlearning"
    assert (out / "MUSE_REPORT.md").read_text().startswith("# MUSE evaluation")


def test_muse_parser_rejects_two_references():
    with pytest.raises(SystemExit):
        _muse_args(["muse", "--model", "m", "--retain-model", "r", "--retain-logs", "l.json"])


@pytest.mark.filterwarnings("ignore:.*few-shot prompts have")
def test_cli_main_with_retain_logs(cli_run, sample, tiny_dir, tmp_path):
    """``alignkit eval muse`` through the real CLI (``alignkit.commands.eval`` registers it)."""
    from alignkit.cli import main

    _, out = cli_run
    rc = main(
        ["eval", "muse", "--model", str(tiny_dir), "--retain-logs", str(out)]  # a run folder works too
        + ["--data", str(sample), "--output-dir", str(tmp_path), "--max-examples", "2", "--no-progress"]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "MUSE_SUMMARY.json").read_text())
    assert summary["privleak"] == 0.0  # same model, same items: its own log is the reference
