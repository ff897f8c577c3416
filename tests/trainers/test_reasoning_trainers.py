"""AFT, RRHF, PRO and DPO with AFT's constraint, trained for real on the tiny model (methods-alignment-2.md)."""

from __future__ import annotations

import math

import pytest
import torch
from trainer_helpers import answer_logps, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.data import RecordError
from alignkit.data.synthetic.reasoning import arithmetic_task


def aft_rows(n: int = 8) -> list[dict]:
    """Per question: the gold chain as `reference`, and three samples: right, wrong answer, wrong step."""
    rows = []
    for row, final in zip(*(lambda t: (t.records, t.finals))(arithmetic_task(n, seed=5))):
        chain = row["answer"].rsplit("\n", 1)[0]
        rows.append(
            {
                "prompt": row["question"],
                "reference": row["answer"],
                "completions": [
                    row["answer"],
                    f"{chain}\n#### {final + 1}",
                    f"{final} + 1 = {final + 1}.\n#### {final + 1}",
                ],
                "labels": [1, 0, 0],
            }
        )
    return rows


def token_mean_lps(model, tokenizer, rows) -> torch.Tensor:
    """Token-mean log-probs ``[n, 3]`` of the samples (sample 0 is the gold chain), from a plain forward."""
    flat = [{"prompt": r["prompt"], "completion": c} for r in rows for c in r["completions"]]
    seq, lengths = answer_logps(model, tokenizer, flat)
    return (seq / lengths).view(len(rows), -1)


def run(name, tiny_model_dir, tokenizer, tmp_path, rows, **overrides):
    spec = get_method(name)
    args = train_args(spec, tmp_path / name, max_steps=overrides.pop("max_steps", 12), **overrides)
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
    )
    trainer.train()
    return trainer


def test_aft_orders_right_chains_above_wrong_ones_and_learns_the_gold_chain(
    tiny_model_dir, tokenizer, tmp_path
):
    rows = aft_rows()
    model0 = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    s0 = token_mean_lps(model0, tokenizer, rows)
    trainer = run("aft", tiny_model_dir, tokenizer, tmp_path, rows)
    s1 = token_mean_lps(trainer.model, tokenizer, rows)
    margin0 = (s0[:, :1] - s0[:, 1:]).mean()
    margin1 = (s1[:, :1] - s1[:, 1:]).mean()
    # The right and wrong chains share all but a few tokens, so the token-mean gap moves by hundredths
    # (measured 0.014 -> 0.038 in 12 steps) while VFT lifts every chain.
    assert margin1 > margin0 + 0.01, (margin0, margin1)
    assert s1[:, 0].mean() > s0[:, 0].mean() + 0.5, (s0[:, 0].mean(), s1[:, 0].mean())  # VFT: gold chain
    first = trainer.state.log_history[0]
    for key in (
        "aft/vft",
        "aft/alignment",
        "aft/assessment_accuracy",
        "aft/below_boundary",
        "aft/all_correct",
    ):
        assert key in first, sorted(first)
    assert trainer.feedback == "binary"


def test_aft_boundary_constraint_keeps_wrong_chains_from_falling_as_far(tiny_model_dir, tokenizer, tmp_path):
    """Same data, seed and steps, the alignment term alone (no `reference`, so no VFT term lifting every
    chain): without a constraint the wrong chains' token-mean log-prob falls; under BC it does not
    (measured: -0.06 vs +0.88 nats per token)."""
    rows = aft_rows()
    for row in rows:
        del row["reference"]
    s0 = token_mean_lps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, rows)
    drops = {}
    for constraint in ("none", "bc"):
        trainer = run("aft", tiny_model_dir, tokenizer, tmp_path / constraint, rows, constraint=constraint)
        s1 = token_mean_lps(trainer.model, tokenizer, rows)
        drops[constraint] = float((s0[:, 1:] - s1[:, 1:]).mean())
    assert drops["none"] > 0 > drops["bc"], drops


def test_aft_rows_all_right_or_all_wrong_train_vft_only_and_are_counted(tiny_model_dir, tokenizer, tmp_path):
    rows = aft_rows(4)
    rows[0]["labels"] = [1, 1, 1]
    rows[1]["labels"] = [0, 0, 0]
    trainer = run("aft", tiny_model_dir, tokenizer, tmp_path, rows, max_steps=1)
    first = trainer.state.log_history[0]
    assert (first["aft/all_correct"], first["aft/all_wrong"], first["aft/questions_with_pairs"]) == (1, 1, 2)


def test_aft_binary_feedback_refuses_a_graded_label_naming_the_row(tiny_model_dir, tokenizer, tmp_path):
    rows = aft_rows(3)
    rows[2]["labels"] = [1, 0.5, 0]
    spec = get_method("aft")
    with pytest.raises(
        RecordError, match=r"train_dataset, row 2, field `labels\[1\]`: is 0.5; feedback='binary'"
    ):
        spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=train_args(spec, tmp_path, feedback="binary"),
            train_dataset=rows,
            processing_class=tokenizer,
        )


def test_pro_refuses_ranks_naming_the_row(tiny_model_dir, tokenizer, tmp_path):
    spec = get_method("pro")
    rows = [{"prompt": "p", "completions": ["a b", "c d"], "ranks": [1, 2]}]
    with pytest.raises(RecordError, match=r"row 0, field `ranks`: PROTrainer weighs pairs by reward gaps"):
        spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=train_args(spec, tmp_path),
            train_dataset=rows,
            processing_class=tokenizer,
        )


@pytest.mark.parametrize("margin", [0.1, 0.5])
def test_dpo_boundary_constraint_first_step_value(margin, tiny_model_dir, tokenizer, tmp_path):
    """Policy = reference at step 0: u_w = u_l = 0, so L = log 2 + softplus(-2 * margin) exactly."""
    rows = [
        {"prompt": r["prompt"], "chosen": r["completions"][0], "rejected": r["completions"][1]}
        for r in aft_rows(4)
    ]
    trainer = run(
        "dpo", tiny_model_dir, tokenizer, tmp_path, rows, max_steps=1, constraint="bc", boundary_margin=margin
    )
    first = trainer.state.log_history[0]
    assert first["constraint/bound"] == pytest.approx(math.log1p(math.exp(-2 * margin)), abs=1e-5)
    assert first["loss"] == pytest.approx(math.log(2) + math.log1p(math.exp(-2 * margin)), abs=1e-5)


def test_rrhf_upstream_sft_reduction_and_constraint_run(tiny_model_dir, tokenizer, tmp_path):
    rows = [
        {"prompt": r["prompt"], "completions": r["completions"], "scores": [2.0, 1.0, 0.0]}
        for r in aft_rows(4)
    ]
    trainer = run(
        "rrhf",
        tiny_model_dir,
        tokenizer,
        tmp_path,
        rows,
        max_steps=2,
        sft_reduction="upstream",
        constraint="bc",
    )
    first = trainer.state.log_history[0]
    assert {"rrhf/rank", "rrhf/sft", "constraint/bound"} <= set(first)
    # The upstream SFT term divides by the padded row length, the default by the answer's own tokens.
    token_mean = run("rrhf", tiny_model_dir, tokenizer, tmp_path / "tm", rows, max_steps=1).state.log_history[
        0
    ]
    assert first["rrhf/sft"] < token_mean["rrhf/sft"]


# ------------------------------------------------------------------------------ the self-sampling step


def qa_rows(n: int = 4) -> list[dict]:
    return arithmetic_task(n, seed=9).records  # GSM8K's {"question", "answer"} layout


def even_length(row, completion) -> bool:  # a verifier whose labels are mixed on a random model's samples
    return len(completion) % 2 == 0


def aft_sampling(tiny_model_dir, tokenizer, out, rows, **overrides):
    spec = get_method("aft")
    args = train_args(
        spec,
        out,
        max_steps=2,
        num_samples=3,
        sample_max_new_tokens=8,
        sample_cache_dir=str(out / "cache"),
        **overrides,
    )
    return spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
    )


def test_aft_draws_labels_stores_and_reuses_its_own_samples(tiny_model_dir, tokenizer, tmp_path):
    rows = qa_rows()
    trainer = aft_sampling(
        tiny_model_dir, tokenizer, tmp_path / "run", rows, verifier="test_reasoning_trainers:even_length"
    )
    kept, labels = trainer.samples
    assert len(kept) == 4 and all(1 <= len(k) <= 3 for k in kept)
    assert labels == [[float(even_length(None, c)) for c in k] for k in kept]
    counts = trainer.sample_counts
    assert counts["duplicates"] + counts["empty"] + sum(len(k) for k in kept) == 12
    assert counts["all_correct"] + counts["all_wrong"] + counts["mixed"] == 4
    # Each training row is [gold chain, samples...]: the gold chain is the row's answer.
    encoded = trainer.train_dataset[0]
    assert tokenizer.decode(encoded["completion_ids"][0]).startswith(rows[0]["answer"].split(".")[0])
    output = trainer.train()
    assert output.metrics["samples_mixed"] == counts["mixed"]
    stored = (tmp_path / "run" / "aft_samples.json").read_text()
    # A re-run in the same folder reads the draw back (with the cache gone, it could not draw the same
    # samples from other weights silently either: the key covers the weights).
    for file in (tmp_path / "run" / "cache").iterdir():
        file.unlink()
    again = aft_sampling(
        tiny_model_dir, tokenizer, tmp_path / "run", rows, verifier="test_reasoning_trainers:even_length"
    )
    assert again.samples == trainer.samples
    assert not any((tmp_path / "run" / "cache").iterdir())  # nothing drawn, nothing cached
    assert (tmp_path / "run" / "aft_samples.json").read_text() == stored
    # Other settings in the same folder: an error, never a silent redraw.
    with pytest.raises(
        ValueError, match="aft_samples.json holds AFT samples made for other weights, data or settings"
    ):
        aft_sampling(tiny_model_dir, tokenizer, tmp_path / "run", rows, verifier="arithmetic")


def test_aft_qa_rows_need_a_verifier_and_a_bad_verifier_names_the_row(tiny_model_dir, tokenizer, tmp_path):
    from alignkit.data.verifiers import VerifierError

    with pytest.raises(RecordError, match="QA rows with a `verifier`"):
        aft_sampling(tiny_model_dir, tokenizer, tmp_path / "a", qa_rows(2))
    with pytest.raises(VerifierError, match=r"train_dataset, row 0: verifier .* returned 'right'"):
        aft_sampling(
            tiny_model_dir,
            tokenizer,
            tmp_path / "b",
            qa_rows(2),
            verifier="test_reasoning_trainers:says_right",
        )


def says_right(row, completion):
    return "right"
