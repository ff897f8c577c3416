"""A reduced quickstart run (fewer people, two methods) asserting the pipeline's invariants."""

from __future__ import annotations

import json

import pytest

from alignkit.quickstart import QuickstartSettings, run_quickstart, verdict


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    settings = QuickstartSettings(
        num_people=10, questions_per_person=6, finetune_epochs=25, methods=("ga", "npo"), unlearn_epochs=3
    )
    out = tmp_path_factory.mktemp("quickstart")
    return run_quickstart(out, settings, progress=False)


def test_target_learned_the_forget_set_and_retain_did_not(quick):
    target, retain = quick.rows["target"], quick.rows["retain"]
    # The target saw the forget set; the oracle never did. Unlearning is meaningless otherwise.
    assert target["forget_prob"] > 0.5
    assert target["forget_prob"] > retain["forget_prob"] + 0.3
    assert target["forget_rouge"] > retain["forget_rouge"]
    # Both models know the retain set and the general facts they were fine-tuned on.
    assert retain["retain_Q_A_Prob"] > 0.5 and target["retain_Q_A_Prob"] > 0.5


def test_retain_model_is_its_own_reference(quick):
    assert quick.rows["retain"]["forget_quality"] == pytest.approx(1.0)


def test_unlearning_lowers_forget_probability(quick):
    for method in ("ga", "npo"):
        assert quick.rows[method]["forget_prob"] < quick.rows["target"]["forget_prob"], method


def test_report_files_written(quick):
    out = quick.output_dir
    for name in ("tofu_comparison.md", "fq_vs_mu.png", "quickstart.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 100, name
    logged = json.loads((out / "quickstart.json").read_text())
    assert set(logged["results"]) == {"target", "retain", "ga", "npo"}
    for name in ("target", "retain", "ga", "npo"):
        assert (out / "eval" / name / "TOFU_EVAL.json").is_file()
        assert (out / "models" / name / "model.safetensors").is_file()
    assert "learned the forget set" in " ".join(verdict(quick.rows))
