"""Every registered method, trained for real on a tiny model; trainer-level identities; eval; metrics.

The method list is read from the registry (``alignkit.trainers.METHODS``): a new method joins these
tests without an edit here.
"""

from __future__ import annotations

import math

import pytest
import torch
from trainer_helpers import (
    FORGET,
    RETAIN,
    mean_token_logp,
    preference_quality,
    preference_rows,
    snapshot,
    train_args,
    uses_retain,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit import get_method
from alignkit.data import ForgetRetainDataset
from alignkit.data.records import ROLES
from alignkit.trainers import METHODS

METHOD_NAMES = sorted(METHODS)
# HAMU's step is bounded by lr * ||retain gradient||, which is ~0 on the memorised model: at lr 1e-3
# every step is out of reach (infeasible) and training stops. A larger rate with the official
# continue-on-infeasible fallback (a step of forget gain B along the forget gradient) moves it.
RUN_OVERRIDES = {
    "hamu": {"learning_rate": 0.05, "continue_on_failed_feasibility": True},
    # AltPO writes its alternates before training: 2 short ones per question keep the test at seconds.
    "altpo": {"num_alternates": 2, "alternate_max_new_tokens": 16},
}

# Methods whose loss is not a log-prob: their direction is checked in their own file.
OWN_DIRECTION_TEST = {
    "wpn": "representation-level loss: tests/trainers/test_wpn.py checks its cosine margin moves",
}
# Methods that rank on the token-mean log-prob (spec methods-alignment-2.md §1): their direction is
# measured on that score.
TOKEN_MEAN_RANKERS = {"aft", "rrhf", "pro"}


def _roles(trainer) -> set[str]:
    encoded = trainer.train_dataset
    if isinstance(encoded, ForgetRetainDataset):
        encoded = encoded.forget
    return {ROLES[r] for row in encoded["roles"] for r in row}


def test_registry_is_not_empty():
    # Guards the parametrisation below: an empty registry would make every test vanish silently.
    assert {"npo", "ga", "finetune"} <= set(METHOD_NAMES)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_trains_in_its_familys_direction(name, tiny_model_dir, unlearn_model_dir, tmp_path):
    """A few real steps move the model the way the method's family says, and every parameter moved.

    unlearning: forget log-prob down, retain kept (starting from the model that memorised FORGET +
    RETAIN, so there is something to forget); sft (``finetune``): answer log-prob up from the random
    model; alignment: on rows of the method's registered data shape, the policy's own log-probs
    order the completions better (chosen over the negatives, or the list's ranking accuracy; for
    negatives-only data the negatives' log-prob goes down). The learning rate 1e-3 is ~100x a real
    LLM's: a 64-wide model must move measurably in a few steps.
    """
    if name in OWN_DIRECTION_TEST:
        pytest.skip(OWN_DIRECTION_TEST[name])
    spec = get_method(name)
    start = unlearn_model_dir if spec.family == "unlearning" else tiny_model_dir
    tokenizer = AutoTokenizer.from_pretrained(start)
    # Alignment starts from the random model, whose log-probs order completions mostly by length:
    # reordering them takes more steps than lowering a memorised answer.
    steps = 20 if spec.family == "alignment" else 5
    args = train_args(
        spec, tmp_path, max_steps=steps, **{"learning_rate": 1e-3, **RUN_OVERRIDES.get(name, {})}
    )
    model = AutoModelForCausalLM.from_pretrained(start)
    before = snapshot(model)
    if spec.family == "alignment":
        rows = preference_rows(spec.data)
        per_token = name in TOKEN_MEAN_RANKERS
        quality0 = preference_quality(model, tokenizer, rows, spec.data, per_token)
    else:
        rows = FORGET
        forget0 = mean_token_logp(model, tokenizer, FORGET)
        retain0 = mean_token_logp(model, tokenizer, RETAIN)

    trainer = spec.trainer_cls(
        model=model,
        args=args,
        train_dataset=rows,
        retain_dataset=RETAIN if uses_retain(args) else None,
        processing_class=tokenizer,
    )
    trainer.train()

    unchanged = [
        n for n, p in trainer.model.named_parameters() if p.requires_grad and torch.equal(before[n], p)
    ]
    assert not unchanged, f"{name}: parameters did not change: {unchanged}"

    if spec.family == "alignment":
        quality1 = preference_quality(trainer.model, tokenizer, rows, spec.data, per_token)
        assert quality1 > quality0 + 0.05 * max(1.0, abs(quality0)), (
            f"{name} ({spec.data}): {quality0:.4f} -> {quality1:.4f}"
        )
    else:
        forget1 = mean_token_logp(trainer.model, tokenizer, FORGET)
        retain1 = mean_token_logp(trainer.model, tokenizer, RETAIN)
        d_forget, d_retain = forget1 - forget0, retain1 - retain0
        report = f"{name}: forget {forget0:.4f} -> {forget1:.4f}, retain {retain0:.4f} -> {retain1:.4f}"
        if spec.family == "sft":
            assert d_forget > 0.01, report
        else:
            # The memorised answers sit near -0.02 nats/token: ask for the forget NLL to grow by 20%+
            # (SimNPO, whose forget term weighs 0.125 against the retain NLL, moves least: ~+45%).
            assert d_forget < -0.2 * abs(forget0), report
        if uses_retain(args):
            assert abs(d_retain) < 0.5 * abs(d_forget), report

    # Metric logging: the core keys of every method, the reference keys only where there is one.
    first = trainer.state.log_history[0]
    assert "loss/method" in first, sorted(first)
    for role in _roles(trainer):
        assert f"logps/{role}" in first, sorted(first)
        # RMU's reference reads activations of the retain rows only: no forget-row reference log-probs.
        has_ref = trainer.ref_mode != "none" and trainer.needs.reference != "hidden"
        assert (f"ref_logps/{role}" in first) == has_ref, (trainer.ref_mode, sorted(first))
        assert (f"logratio/{role}" in first) == has_ref, (trainer.ref_mode, sorted(first))
    for log in trainer.state.log_history:
        for key, value in log.items():
            assert not isinstance(value, float) or math.isfinite(value), (key, value)


# --------------------------------------------------------------------------- degenerate identities


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_npo_first_log_at_the_reference(beta, tiny_model_dir, tokenizer, tmp_path):
    """Reference == policy at step 0: the first log has log-ratio 0, NPO weight 1, L = (2/β)·log 2."""
    spec = get_method("npo")
    args = train_args(spec, tmp_path, max_steps=1, beta=beta)
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=FORGET,
        processing_class=tokenizer,
    )
    expected = 2.0 / beta * math.log(2.0)
    # The loss value alone holds for any reduction of equal terms; tests/trainers/test_combined_loss.py
    # pins the reduction with a reference that differs from the policy. Here: what the first log says.
    trainer.train()
    first = trainer.state.log_history[0]
    assert first["loss"] == pytest.approx(expected, abs=1e-5)
    assert first["loss/method"] == pytest.approx(expected, abs=1e-5)
    assert first["logratio/answer"] == pytest.approx(0.0, abs=1e-6)
    assert first["forget/npo_weight"] == pytest.approx(1.0, abs=1e-6)
    assert first["logps/answer"] == pytest.approx(first["ref_logps/answer"], abs=1e-6)


# Four distinct rows whose prompts and answers have the same token counts (checked below).
EQUAL_ROWS = [{"question": f"Who is {c}?", "answer": f"{c} is a writer from Paris."} for c in "ABCD"]


@pytest.mark.parametrize("name", ["npo", "ga"])
def test_gradient_accumulation_equivalence(name, tiny_model_dir, tokenizer, tmp_path):
    """Batch 4 x 1 step == batch 2 x 2 accumulation steps, after one optimizer step.

    Losses are per-micro-batch means and Trainer averages them over the accumulation steps (spec:
    "Gradient accumulation"). For NPO (a mean over sequences) the two agree for any rows; for GA (a
    token mean) only when both micro-batches hold the same number of answer tokens, so the rows here
    have equal lengths. Plain SGD without clipping: the update is lr x gradient, so a wrong scale
    (a missing 1/accumulation, a dropped micro-batch) shows, which Adam's sign-like first step hides.
    """
    spec = get_method(name)
    results = []
    for batch_size, accumulation in [(4, 1), (2, 2)]:
        args = train_args(
            spec,
            tmp_path / f"b{batch_size}",
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=1e-2,
            max_grad_norm=0.0,
            weight_decay=0.0,
        )
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        before = snapshot(model)
        trainer = spec.trainer_cls(
            model=model, args=args, train_dataset=EQUAL_ROWS, processing_class=tokenizer
        )
        lengths = {(len(r["prompt_ids"][0]), len(r["completion_ids"][0])) for r in trainer.train_dataset}
        assert len(lengths) == 1, f"rows must have equal token counts for this test, got {lengths}"
        trainer.train()
        assert trainer.state.global_step == 1
        results.append({n: p.detach() - before[n] for n, p in trainer.model.named_parameters()})
    full, accumulated = results
    largest = max(float(d.abs().max()) for d in full.values())
    assert largest > 1e-3, "the step barely moved the parameters; the comparison would be vacuous"
    worst = max((float((full[n] - accumulated[n]).abs().max()), n) for n in full)
    assert worst[0] < 1e-5, (
        f"{name}: parameter {worst[1]} differs by {worst[0]:.2e} (largest update {largest:.2e})"
    )


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("ref_mode", ["model", "precomputed"])
def test_evaluate_returns_eval_metrics(ref_mode, tiny_model_dir, tokenizer, tmp_path):
    """``evaluate()`` on an eval set gives eval_loss and the eval_-prefixed core metrics."""
    spec = get_method("npo")
    args = train_args(
        spec, tmp_path, max_steps=1, ref_mode=ref_mode, ref_cache_dir=str(tmp_path / "cache"), beta=0.1
    )
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=FORGET,
        eval_dataset=FORGET[:4],
        processing_class=tokenizer,
    )
    metrics = trainer.evaluate()
    for key in ("eval_loss", "eval_loss/method", "eval_logps/answer", "eval_ref_logps/answer"):
        assert key in metrics, sorted(metrics)
    # Untrained policy == reference: the eval loss is NPO's step-0 value.
    assert metrics["eval_loss"] == pytest.approx(2.0 / 0.1 * math.log(2.0), abs=1e-4)
    assert metrics["eval_logratio/answer"] == pytest.approx(0.0, abs=1e-5)

    trainer.train()
    after = trainer.evaluate()
    assert after["eval_logratio/answer"] < 0, "one NPO step should lower the eval forget log-ratio"
    assert math.isfinite(after["eval_loss"])
    assert not any(k.startswith("eval_") for k in trainer.state.log_history[0]), "train log leaked eval keys"


def test_evaluate_on_rows_passed_at_call_time(tiny_model_dir, tokenizer, tmp_path):
    """``evaluate(eval_dataset=rows)`` encodes the rows as the constructor does (IdkDPO adds its IDK answer)."""
    spec = get_method("idk_dpo")
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=train_args(spec, tmp_path, max_steps=2),
        train_dataset=FORGET,
        eval_dataset=FORGET[:4],
        processing_class=tokenizer,
    )
    trainer.train()  # off the reference, so a mis-paired chosen/rejected would change the loss
    at_init = trainer.evaluate()
    at_call = trainer.evaluate(eval_dataset=FORGET[:4])
    assert "eval_logps/chosen" in at_call and "eval_logps/rejected" in at_call, sorted(at_call)
    assert at_call["eval_loss"] == pytest.approx(at_init["eval_loss"], abs=1e-5)
    assert at_init["eval_loss"] != pytest.approx(2.0 / 0.1 * math.log(2.0), abs=1e-3)


def test_evaluate_new_rows_with_precomputed_reference_is_refused(tiny_model_dir, tokenizer, tmp_path):
    spec = get_method("npo")
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=train_args(spec, tmp_path, ref_mode="precomputed", ref_cache_dir=str(tmp_path / "cache")),
        train_dataset=FORGET,
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match=r"only the datasets given at construction have reference log-probs"):
        trainer.evaluate(eval_dataset=FORGET[:4])


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_model_and_args_positional(name, tiny_model_dir, tokenizer, tmp_path):
    """``Trainer(model, args, ...)`` works for every method, as for ``transformers.Trainer``: the
    positional model is the one trained, for the positional args' number of steps."""
    spec = get_method(name)
    args = train_args(spec, tmp_path, max_steps=2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = snapshot(model)
    trainer = spec.trainer_cls(
        model,
        args,
        train_dataset=FORGET if spec.data == "single" else preference_rows(spec.data),
        retain_dataset=RETAIN if uses_retain(args) else None,
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 2  # the positional args (train_args defaults to 5 steps)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters()), (
        f"{name}: model not trained"
    )
