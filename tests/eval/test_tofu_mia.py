"""TOFU MIA on the holdout splits and PrivLeak (spec2 §8.4): the spec's vectors, then the real pipeline."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alignkit.eval import OPEN_UNLEARNING, evaluate_tofu, mia
from alignkit.eval.scoring import ScoredText
from alignkit.eval.tofu_mia import holdout_split_for, min_k_answer_score, privleak_entry

FAST = OPEN_UNLEARNING.replace(max_new_tokens=4)


def test_min_k_spec_vectors():
    lp = [-0.1, -2.0, -0.5, -3.0, -0.2]
    assert mia.min_k_score(lp, 0.4) == pytest.approx(2.5, abs=1e-9)
    assert mia.min_k_score(lp, 0.2) == pytest.approx(3.0, abs=1e-9)
    assert mia.min_k_score([-0.1, -2.0, -0.5], 0.4) == pytest.approx(2.0, abs=1e-9)  # int(3*0.4) = 1


def test_min_k_reads_the_answer_without_its_eos_label():
    """T' drops the last label (EOS): the EOS log-prob, however low, never counts; an empty T' scores 0."""
    scored = ScoredText(torch.tensor([-0.1, -2.0, -0.5, -3.0, -0.2, -50.0]), [1, 2, 3, 4, 5, 2], True)
    assert min_k_answer_score(scored) == pytest.approx(2.5, abs=1e-6)
    assert min_k_answer_score(ScoredText(torch.tensor([-9.0]), [2], True)) == 0.0


def test_auc_and_privleak_spec_vectors():
    auc_model = mia.mia_auc([0.5, 1.0, 2.5], [2.0, 3.0, 1.5])
    auc_retain = mia.mia_auc([1.0, 2.0, 3.0], [1.5, 2.0, 4.0])
    assert auc_model == pytest.approx(0.7777777778, abs=1e-9)
    assert auc_retain == pytest.approx(0.6111111111, abs=1e-9)
    assert privleak_entry(auc_model, auc_retain, "r")["agg_value"] == pytest.approx(-42.8571428, abs=1e-6)
    assert mia.privleak(auc_model, 0.5) == pytest.approx(-55.5555555, abs=1e-6)
    assert mia.privleak(1.0, auc_retain) == pytest.approx(-99.9999999743, abs=1e-8)
    assert mia.privleak(auc_retain, auc_retain) == 0.0
    # no retain AUC: no silent 0.5 fallback
    entry = privleak_entry(auc_model, None, None)
    assert entry["agg_value"] is None and "retain model" in entry["note"]


def test_holdout_split_matches_the_forget_split():
    assert [holdout_split_for(f) for f in ("forget01", "forget05", "forget10")] == [
        "holdout01",
        "holdout05",
        "holdout10",
    ]


def test_holdout_files_are_nested_head_slices(tofu_dir):
    """The shipped holdout splits: 40/200/400 rows, holdout01 = holdout10[:40] (spec2 §8.4)."""
    rows = {
        n: [json.loads(x) for x in (tofu_dir / f"holdout{n}.json").read_text().splitlines() if x]
        for n in ("01", "05", "10")
    }
    assert [len(rows[n]) for n in ("01", "05", "10")] == [40, 200, 400]
    assert rows["01"] == rows["10"][:40] and rows["05"] == rows["10"][:200]


@pytest.fixture(scope="module")
def mia_run(tofu_model_dir, tofu_retain_dir, tofu_dir):
    return evaluate_tofu(
        tofu_model_dir,
        data=tofu_dir,
        forget_split="forget01",
        retain_model=tofu_retain_dir,
        protocol=FAST,
        max_examples=8,
        progress=False,
    )


def test_tofu_eval_computes_mia_and_privleak_against_the_retain_model(
    mia_run, tofu_model_dir, tofu_dir, tmp_path
):
    logs = mia_run.logs
    entry = logs["mia_min_k"]
    assert entry["holdout_split"] == "holdout01" and entry["k"] == 0.4
    assert len(entry["forget"]["value_by_index"]) == 8 and len(entry["holdout"]["value_by_index"]) == 8
    f = list(entry["forget"]["value_by_index"].values())
    h = list(entry["holdout"]["value_by_index"].values())
    f = [v["score"] if isinstance(v, dict) else v for v in f]
    h = [v["score"] if isinstance(v, dict) else v for v in h]
    pairs = sum((b > a) + 0.5 * (b == a) for a in f for b in h) / (len(f) * len(h))
    assert entry["agg_value"] == pytest.approx(pairs, abs=1e-12)  # AUC from the logged per-item scores
    retain_auc = logs["privleak"]["retain_auc"]
    a, r = 1 - entry["agg_value"], 1 - retain_auc
    assert logs["privleak"]["agg_value"] == pytest.approx((a - r) / (r + 1e-10) * 100)
    assert mia_run.summary["privleak"] == logs["privleak"]["agg_value"]
    assert logs["alignkit"]["holdout_split"] == "holdout01"

    # A model used as its own retain model leaks exactly like it: PrivLeak 0.
    retain_log = evaluate_tofu(
        logs["alignkit"]["retain_reference"]["source"] if False else tofu_model_dir,
        data=tofu_dir,
        forget_split="forget01",
        retain_model=tofu_model_dir,
        protocol=FAST,
        max_examples=8,
        progress=False,
    )
    assert retain_log.logs["privleak"]["agg_value"] == pytest.approx(0.0)  # a model against itself


def test_missing_holdout_split(tofu_model_dir, tofu_dir, tmp_path):
    """auto: MIA skipped and the log says so; an explicit split that is absent: one line naming it."""
    data = tmp_path / "tofu"
    data.mkdir()
    for f in tofu_dir.glob("*.json"):
        if not f.name.startswith("holdout"):
            (data / f.name).symlink_to(f)
    run = evaluate_tofu(
        tofu_model_dir, data=data, forget_split="forget01", protocol=FAST, max_examples=4, progress=False
    )
    assert "mia_min_k" not in run.logs and run.logs["alignkit"]["holdout_split"] is None
    with pytest.raises(FileNotFoundError, match=r"holdout split 'holdout01' not found") as info:
        evaluate_tofu(
            tofu_model_dir,
            data=data,
            forget_split="forget01",
            protocol=FAST,
            max_examples=4,
            progress=False,
            holdout="holdout01",
        )
    assert "\n" not in str(info.value)
    assert math.isfinite(run.summary["forget_prob"])
