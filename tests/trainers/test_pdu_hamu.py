"""PDU and HAMU as trainers: PDU's multiplier follows its dual recurrence; HAMU's step is exactly Δ."""

from __future__ import annotations

import logging

import pytest
import torch
from trainer_helpers import FORGET, RETAIN, snapshot, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.data import PreferenceCollator
from alignkit.losses.hamu import hamu_update, split_budget


def make(name, model_dir, tokenizer, out, **kw):
    spec = get_method(name)
    return spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=train_args(spec, out, **kw),
        train_dataset=FORGET,
        retain_dataset=RETAIN,
        processing_class=tokenizer,
    )


def test_pdu_multiplier_follows_the_dual_recurrence_after_warmup(
    unlearn_model_dir, unlearn_tokenizer, tmp_path
):
    """α fixed at α₀ for one warm-up epoch (2 steps), then α <- max(0, α + η (R̂ − ε)) each step."""
    trainer = make("pdu", unlearn_model_dir, unlearn_tokenizer, tmp_path, max_steps=6, retain_weight=2.0,
                   retain_eps=0.02, dual_lr=5.0, dual_warmup_epochs=1.0)  # fmt: skip
    trainer.train()
    logs = [h for h in trainer.state.log_history if "constraint/retain/lambda" in h]
    lam = [h["constraint/retain/lambda"] for h in logs]
    value = [h["constraint/retain/value"] for h in logs]
    # Step k's update sees epoch (k+1)/2: steps 1 (epoch 0.5) keep α₀; from step 2 (epoch 1.0) it moves.
    expected = [2.0, 2.0]
    for v in value[1:-1]:
        expected.append(max(0.0, expected[-1] + 5.0 * (v - 0.02)))
    assert lam == pytest.approx(expected, rel=1e-6)
    assert len(set(lam)) > 2  # it moved
    assert logs[-1]["forget/logit_gap"] < logs[0]["forget/logit_gap"]  # the forget logits flatten


def _nll(model, tokenizer, rows):
    batch = PreferenceCollator(tokenizer)(rows)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    token = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].bool()
    return -token[mask].mean()


@pytest.mark.parametrize("full_grad", [False, True])
def test_hamu_sgd_step_is_exactly_delta(full_grad, tiny_model_dir, tokenizer, tmp_path):
    """One step from the random model: θ_1 − θ_0 = Δ from independent autograd gradients of the forget and
    retain NLLs of the step's rows (separate forwards), the retain one clipped to max_grad_norm."""
    trainer = make("hamu", tiny_model_dir, tokenizer, tmp_path, max_steps=1, per_device_train_batch_size=8,
                   learning_rate=0.05, full_grad=full_grad, continue_on_failed_feasibility=True)  # fmt: skip
    model = trainer.model
    before = snapshot(model)
    trainer.train()
    batch = trainer.train_dataset  # 8 forget rows, each paired with its retain row
    forget_rows = [{k: v for k, v in r.items() if not k.startswith("retain_")} for r in batch]
    retain_rows = [{**f, "prompt_ids": r["retain_prompt_ids"], "completion_ids": r["retain_completion_ids"]}
                   for f, r in zip(forget_rows, batch)]  # fmt: skip
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ref.train()
    params = [p for p in ref.parameters() if p.requires_grad]
    g_r = torch.autograd.grad(_nll(ref, tokenizer, retain_rows), params)
    g_f = torch.autograd.grad(_nll(ref, tokenizer, forget_rows), params)
    scale = min(1.0, 1.0 / (float(torch.sqrt(sum((g.double() ** 2).sum() for g in g_r))) + 1e-6))
    g_r = [g.double() * scale for g in g_r]
    g_f = [g.double() for g in g_f]
    if full_grad:
        s = hamu_update(torch.cat([g.reshape(-1) for g in g_r]), torch.cat([g.reshape(-1) for g in g_f]),
                        lr=0.05, budget=0.025)  # fmt: skip
        step = s.delta if s.delta is not None else s.fallback
        deltas = torch.split(step, [p.numel() for p in params])
    else:
        budgets = split_budget(0.025, g_r, g_f, "grad_norm")
        steps = [hamu_update(r, f, lr=0.05, budget=b) for r, f, b in zip(g_r, g_f, budgets)]
        deltas = [s.delta if s.delta is not None else s.fallback for s in steps]
    moved = 0.0
    for (name, p), d in zip(model.named_parameters(), deltas):
        got = (p.detach() - before[name]).double().reshape(-1)
        assert torch.allclose(got, d.reshape(-1), atol=2e-6, rtol=1e-3), name
        moved = max(moved, float(d.abs().max()))
    assert moved > 1e-4
    log = trainer.state.log_history[0]
    assert log["hamu/budget"] == pytest.approx(0.025)
    assert sum(
        log[f"hamu/frac_{c}"] for c in ("direct", "rectified", "colinear", "infeasible")
    ) == pytest.approx(1)


def test_hamu_infeasible_stops_loudly_and_flags_the_stopping_criterion(unlearn_model_dir, unlearn_tokenizer, tmp_path,
                                                                      caplog):  # fmt: skip
    """On the memorised model the retain gradient (hence the radius lr·||g_r||) is ~0: B is out of reach."""
    trainer = make("hamu", unlearn_model_dir, unlearn_tokenizer, tmp_path, max_steps=5)
    before = snapshot(trainer.model)
    with caplog.at_level(logging.WARNING, logger="alignkit.trainers.hamu"):
        trainer.train()
    assert trainer.state.global_step == 1  # stopped after the first step
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())  # and applied nothing
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "infeasible" in messages and "stopping criterion met at step 1" in messages
    assert trainer.hamu_stop_signal and trainer.state.stateful_callbacks["HAMU"]["stopping_criterion_met"]


def test_hamu_refuses_fsdp_and_accumulation(tiny_model_dir, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="ZeRO-3 and FSDP shard away"):
        make("hamu", tiny_model_dir, tokenizer, tmp_path, fsdp="full_shard")
    with pytest.raises(ValueError, match="gradient_accumulation_steps: 1"):
        train_args(get_method("hamu"), tmp_path, gradient_accumulation_steps=2)
