"""The trainer's total loss, ``forget_weight * L_forget + retain_weight * L_retain``, against an
independent computation from two plain forwards (policy and a *different* reference model).

The reference differs from the policy, so every log-ratio is nonzero and the retain KL is positive:
the check pins the reduction of each term (sequence mean of summed log-ratios for NPO, token mean
for GA and the retain NLL, position mean for the KL) and both weights, which a step-0 check with
policy == reference cannot (every reduction of equal terms agrees there).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from trainer_helpers import FORGET, RETAIN, answer_logps, train_args
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit import get_method
from alignkit.data import PreferenceCollator

GAMMA, ALPHA, BETA = 0.7, 0.3, 0.5  # forget_weight, retain_weight, β: all different from 1
ROWS = 4
# One retain row: every forget row of the batch is paired with it, so the retain rows are known.
RETAIN_ROW = RETAIN[0]


def _forget_term(name: str, policy, reference, tokenizer) -> float:
    """The method's forget loss from its published formula, on FORGET[:ROWS]."""
    rows = FORGET[:ROWS]
    seq, lengths = answer_logps(policy, tokenizer, rows)
    if name.startswith("ga") or name == "graddiff":  # L = sum_{i,t} logp / sum_{i,t} 1
        return float(seq.sum() / lengths.sum())
    if name.startswith("npo"):  # L = mean_i (2/β) softplus(β (S_i - S_ref,i))
        ref_seq, _ = answer_logps(reference, tokenizer, rows)
        return float((2 / BETA * F.softplus(BETA * (seq - ref_seq))).mean())
    if name == "simnpo":  # L = mean_i (2/β) softplus(β S_i / |y_i| + γ_margin), margin 0
        return float((2 / BETA * F.softplus(BETA * seq / lengths)).mean())
    raise AssertionError(name)


@torch.no_grad()
def _retain_term(kind: str, policy, reference, tokenizer) -> float:
    if kind == "nll":  # token-mean NLL of the answer
        seq, lengths = answer_logps(policy, tokenizer, [RETAIN_ROW])
        return float(-seq.sum() / lengths.sum())
    # KL(π_ref || π_θ) summed over the vocabulary, averaged over every position of the row.
    batch = PreferenceCollator(tokenizer)([RETAIN_ROW])
    ids, attn = batch["input_ids"], batch["attention_mask"]
    logp = torch.log_softmax(policy(input_ids=ids, attention_mask=attn).logits[:, :-1].double(), -1)
    ref_logp = torch.log_softmax(reference(input_ids=ids, attention_mask=attn).logits[:, :-1].double(), -1)
    return float((ref_logp.exp() * (ref_logp - logp)).sum(-1).mean())


@pytest.mark.parametrize(
    "name, retain",
    [("graddiff", "nll"), ("ga_kl", "kl"), ("npo_rt", "nll"), ("npo_kl", "kl"), ("simnpo", "nll")],
)
def test_total_loss_is_weighted_sum_of_independent_terms(
    name, retain, unlearn_model_dir, tiny_model_dir, tmp_path
):
    spec = get_method(name)
    kwargs = {"forget_weight": GAMMA, "retain_weight": ALPHA}
    if "beta" in spec.config_cls.__dataclass_fields__:
        kwargs["beta"] = BETA
    args = train_args(spec, tmp_path, per_device_train_batch_size=ROWS, **kwargs)
    assert args.retain_loss == retain
    policy = AutoModelForCausalLM.from_pretrained(unlearn_model_dir)
    uses_reference = name.startswith("npo") or retain == "kl"
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir) if uses_reference else None
    tokenizer = AutoTokenizer.from_pretrained(unlearn_model_dir)
    trainer = spec.trainer_cls(
        model=policy,
        args=args,
        train_dataset=FORGET,
        retain_dataset=[RETAIN_ROW],
        processing_class=tokenizer,
        ref_model=reference,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(ROWS)])
    trainer.model.eval()
    with torch.no_grad():
        total = float(trainer.compute_loss(trainer.model, batch))

    forget = _forget_term(name, policy, reference, tokenizer)
    retain_value = _retain_term(retain, policy, reference, tokenizer)
    assert retain_value > 1e-3, "a vanishing retain term would not pin its weight"
    if uses_reference:
        assert reference is not None and trainer.ref_model is reference
    expected = GAMMA * forget + ALPHA * retain_value
    assert math.isfinite(total)
    assert total == pytest.approx(expected, rel=1e-5, abs=1e-5), (total, forget, retain_value)
