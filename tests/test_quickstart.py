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
    return run_quickstart(out, settings, progress=False, part="unlearning")


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


@pytest.fixture(scope="module")
def quick_alignment(tmp_path_factory):
    from alignkit.quickstart_alignment import AlignmentSettings

    small = AlignmentSettings(
        train_prompts=24,
        eval_prompts=8,
        sft_epochs=3,
        align_steps=6,
        sequences_per_step=8,
        safety_train_prompts=16,
        d2o_samples=3,
        safety_new_tokens=16,
    )
    out = tmp_path_factory.mktemp("quickstart_alignment")
    return run_quickstart(out, QuickstartSettings(alignment=small), progress=False, part="alignment")


def test_alignment_half_compares_the_methods_on_held_out_prompts(quick_alignment):
    results = quick_alignment.alignment
    assert set(results) == {"recommendation", "graded_list", "safety"}
    assert set(results["recommendation"]) == {"sft", "dpo", "s_dpo"}
    assert set(results["graded_list"]) == {"sft", "dpo", "lipo"}
    assert set(results["safety"]) == {"sft", "d2o"}
    for task in ("recommendation", "graded_list"):
        models = results[task]
        # The SFT model is the reference: its reward margins are exactly 0 (strict accuracy 0); the
        # aligned models moved away from it on the held-out prompts.
        assert models["sft"]["reward_accuracy"] == 0.0
        for name, summary in models.items():
            assert summary["num_rows"] == 8
            if name != "sft":
                assert summary["reward_margin"] != 0.0
    for key in ("hit_ratio_at_1", "hit_ratio_at_1_by_likelihood"):
        assert all(0.0 <= m[key] <= 1.0 for m in results["recommendation"].values())
    assert all(0.0 < m["ndcg"] <= 1.0 for m in results["graded_list"].values())
    # Every task, every model: the exact score of greedy answers and the well-formed share.
    for models in results.values():
        for summary in models.values():
            assert 0.0 <= summary["generation_score"] <= 1.0 and 0.0 <= summary["valid_ratio"] <= 1.0
    # Safety has negatives only (no pairs to rank): its score is 1 - the flagged rate of greedy replies.
    for summary in results["safety"].values():
        assert summary["num_rows"] == 8 and summary["generation_score"] == 1.0 - summary["flagged_rate"]
    assert (quick_alignment.output_dir / "alignment" / "samples").is_dir()  # D2O's cached draw
    assert quick_alignment.rows == {}  # the unlearning half did not run


def test_alignment_report_files_written(quick_alignment):
    out = quick_alignment.output_dir
    for name in ("alignment_comparison.md", "alignment.png", "quickstart.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 100, name
    logged = json.loads((out / "quickstart.json").read_text())
    assert (
        logged["alignment"]["graded_list"]["lipo"]["ndcg"]
        == quick_alignment.alignment["graded_list"]["lipo"]["ndcg"]
    )
    assert "score of greedy answers" in (out / "alignment_comparison.md").read_text()
    assert (out / "alignment" / "eval" / "recommendation_s_dpo" / "PREFERENCE_EVAL.json").is_file()


def test_alignment_tables_print(quick_alignment):
    from rich.console import Console

    from alignkit.commands.quickstart import _print_alignment

    console = Console(record=True, width=200)
    _print_alignment(console, quick_alignment)
    text = console.export_text()
    assert "HR@1 by likelihood" in text and "NDCG" in text and "s_dpo" in text and "lipo" in text
    assert "SFT on the score of greedy answers" in text and "docs/results.md" in text


def test_alignment_tables_cut_nothing_at_80_columns(quick_alignment):
    """rich's default overflow cut the graded-list headers to `well-form…` / `likeliho…` on an
    80-column terminal; folded cells keep every header and value whole."""
    from rich.console import Console

    from alignkit.commands.quickstart import _print_alignment

    console = Console(record=True, width=80)
    _print_alignment(console, quick_alignment)
    tables = console.export_text().split("•")[0]  # the tables, before the verdict's bullets
    assert "…" not in tables
