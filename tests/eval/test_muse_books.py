"""MUSE-Books through the same MUSE code path, on a synthetic sample in the muse_bench ``data/books`` layout.

The Books corpus (Harry Potter) is copyrighted and never shipped: ``write_books_sample`` writes made-up
chapters in the same files and schemas (raw/{forget,retain1,retain2,holdout}.json as arrays of
strings; verbmem/forget.json prompt/gt pairs cut from the forget text; knowmem/{forget_qa,
forget_qa_icl,retain2_qa,retain2_qa_icl}.json with GitHub's retain2 names; privleak/{forget,
holdout,retain2}.json windows that cross chapter boundaries). The metrics are checked against
open-unlearning's definitions computed independently here: ROUGE-L F1 with rouge_score (stemmer on,
whole references), and Min-40% on the tokens after BOS without the last one, max(1, floor(k n))
tokens, AUC by scikit-learn.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "muse_ou_parity.py"
# open-unlearning's own checkout and environment (not a dependency: the parity test skips without them).
OU_ROOT = Path(os.environ.get("ALIGNKIT_OU_ROOT", "/work/ou/open-unlearning"))
OU_PYTHON = Path(os.environ.get("ALIGNKIT_OU_PYTHON", "/work/ou/venv/bin/python"))


def _script():
    spec = importlib.util.spec_from_file_location("muse_ou_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_books_sample(root: Path, seed: int = 0) -> Path:
    """A made-up corpus in MUSE-Books' layout (scripts/muse_ou_parity.py writes it; no text of the books)."""
    return _script().write_books_sample(root, seed=seed)


@pytest.fixture(scope="module")
def books(tmp_path_factory) -> Path:
    return write_books_sample(tmp_path_factory.mktemp("muse_books"))


@pytest.fixture(scope="module")
def books_model(books, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.launch.sources import dataset_texts
    from alignkit.models import build_tiny_model

    texts = [t for f in sorted(books.rglob("*.json")) for t in dataset_texts(json.loads(f.read_text()))]
    folder = build_tiny_model(texts, tmp_path_factory.mktemp("books_tiny"), vocab_size=300, seed=0)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_books_layout_loads_through_the_muse_reader(books):
    from alignkit.eval.muse_data import load_muse_data

    data = load_muse_data(books)
    assert data.sizes() == {
        "knowmem_forget": 4,
        "knowmem_forget_icl": 3,
        "knowmem_retain": 4,
        "knowmem_retain_icl": 3,
        "verbmem_forget": 4,
        "privleak_forget": 4,
        "privleak_holdout": 4,
    }
    assert data.sources["knowmem_retain"].endswith("knowmem/retain2_qa.json")  # GitHub's name


def _min_k(model, tok, text: str, k: float = 0.4) -> float:
    """open-unlearning's Min-K% score by hand: tokens after BOS, the last dropped, max(1, floor(k n))."""
    ids = tok(text, return_tensors="pt")["input_ids"][:, :2049]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    token_lp = logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]][:-1]
    n = max(1, math.floor(k * len(token_lp)))
    return -float(token_lp.sort().values[:n].mean())


@pytest.mark.filterwarnings("ignore:PrivLeak. no retrained model")
def test_books_metrics_match_open_unlearnings_definitions(books, books_model, tmp_path):
    import dataclasses

    from rouge_score import rouge_scorer
    from scipy.stats import mannwhitneyu

    from alignkit.eval.muse import evaluate_muse
    from alignkit.eval.muse_data import load_muse_data
    from alignkit.eval.muse_protocols import get_muse_protocol

    model, tok = books_model
    proto = dataclasses.replace(
        get_muse_protocol("open-unlearning"), verbmem_max_new_tokens=24, knowmem_max_new_tokens=8
    )
    result = evaluate_muse(model, tok, data=books, protocol=proto, progress=False, output_dir=tmp_path)
    logs = result.logs
    data = load_muse_data(books)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for name, rows, ref in (
        ("forget_verbmem_ROUGE", data.verbmem_forget, "gt"),
        ("forget_knowmem_ROUGE", data.knowmem_forget, "answer"),
        ("retain_knowmem_ROUGE", data.knowmem_retain, "answer"),
    ):
        items = logs[name]["value_by_index"]
        mine = [
            scorer.score(row[ref], items[str(i)]["generation"])["rougeL"].fmeasure
            for i, row in enumerate(rows)
        ]
        assert [items[str(i)]["rougeL_f1"] for i in range(len(rows))] == pytest.approx(mine)
        assert logs[name]["agg_value"] == pytest.approx(sum(mine) / len(mine))
    forget = [_min_k(model, tok, t) for t in data.privleak_forget]
    holdout = [_min_k(model, tok, t) for t in data.privleak_holdout]
    assert [
        logs["mia_min_k"]["forget"]["value_by_index"][str(i)]["score"] for i in range(4)
    ] == pytest.approx(forget)
    # OU's sklearn roc_auc_score(labels [0]*forget + [1]*holdout, scores) is the Mann-Whitney U of the
    # holdout scores over the forget scores, divided by n*m (ties count 1/2): scipy computes it on its own.
    expected_auc = mannwhitneyu(holdout, forget).statistic / (len(forget) * len(holdout))
    assert logs["mia_min_k"]["agg_value"] == pytest.approx(expected_auc)
    # The card and `alignkit push` name the Books dataset, not News.
    from alignkit.eval.logs import read_results

    (source,) = read_results(tmp_path)
    assert source.dataset_type == "muse-bench/MUSE-Books"


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["books", "news"])
def test_open_unlearnings_own_evaluator_agrees_on_every_metric(corpus, tmp_path):
    """scripts/muse_ou_parity.py end to end: open-unlearning's src/eval.py (its own environment) and
    `alignkit eval muse` on one tiny checkpoint; all 10 shared metrics and every per-item value to 1e-6
    (~2 min for Books, ~9 min for News on the shared machine)."""
    if not OU_PYTHON.exists() or not (OU_ROOT / "src" / "eval.py").exists():
        pytest.skip(
            f"open-unlearning's checkout/environment not found ({OU_ROOT}, {OU_PYTHON}); set "
            "ALIGNKIT_OU_ROOT / ALIGNKIT_OU_PYTHON (see scripts/muse_ou_parity.py)"
        )
    if corpus == "news":
        from tests.conftest import shared_dir

        shared_dir("muse_news_sample")
    script = _script()
    code = script.main(["--corpus", corpus, "--out", str(tmp_path / corpus), "--ou-root", str(OU_ROOT),
                        "--ou-python", str(OU_PYTHON)])  # fmt: skip
    rows = json.loads((tmp_path / corpus / "PARITY.json").read_text())["rows"]
    assert code == 0, [r for r in rows if not r["ok"]]
    assert {r["metric"] for r in rows} == set(script.OU_METRICS)
    assert all(
        r["agg_diff"] <= 1e-6 and r["max_item_diff"] <= 1e-6 and not r["unmatched_items"] for r in rows
    )
