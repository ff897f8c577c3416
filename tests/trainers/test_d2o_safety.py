"""D²O for real on the synthetic safety task (exact ``is_flagged`` scorer), from a tiny SFT model.

The SFT model learns both flagged and safe replies (two flagged, one safe per prompt), so its greedy
replies are often flagged. D²O (K=4 self-samples, human negatives only) must then lower the
negatives' log-prob, keep its safe self-samples' log-prob (no collapse), and bring the flagged rate of
greedy replies on held-out prompts below the SFT model's. The 3-seed numbers are in docs/results.md
(``scripts/d2o_safety.py``).
"""

from __future__ import annotations

import pytest
import torch
from trainer_helpers import train_args
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit import get_method
from alignkit.data import PreferenceCollator
from alignkit.data.synthetic import preference as sp
from alignkit.eval.scoring import generate_texts
from alignkit.models import build_tiny_model

pytestmark = pytest.mark.slow


@torch.no_grad()
def per_token_logp(model, tokenizer, pairs: list[tuple[str, str]]) -> float:
    batch = PreferenceCollator(tokenizer)([{"prompt": p, "completion": c} for p, c in pairs])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    token = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].float()
    return float((token * mask).sum() / mask.sum())


def flagged_rate(model, tokenizer, prompts: list[str]) -> float:
    return sp.flagged_rate(generate_texts(model.eval(), tokenizer, prompts, max_new_tokens=24, batch_size=40))


def test_d2o_lowers_the_flagged_rate_without_collapsing_self_samples(tmp_path):
    # The settings of scripts/d2o_safety.py (160 training prompts, 40 steps at 5e-4), 40 held-out prompts.
    task = sp.safety_task(200, negatives_per_prompt=2, seed=0)
    train, test = task.records[:160], task.records[160:]
    texts = [r["prompt"] for r in task.records] + [m["safe"] for m in task.meta]
    texts += [n for r in task.records for n in r["rejected"]]
    base = build_tiny_model(texts, tmp_path / "base", vocab_size=512, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    sft_rows = [
        {"prompt": r["prompt"], "completion": c}
        for r, m in zip(train, task.meta)
        for c in [*r["rejected"], m["safe"]]
    ]
    finetune = get_method("finetune")
    sft = finetune.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(base),
        args=train_args(
            finetune,
            tmp_path / "sft",
            max_steps=-1,
            num_train_epochs=6,
            learning_rate=1e-2,
            per_device_train_batch_size=16,
            lr_scheduler_type="cosine",
            warmup_steps=10,
            logging_steps=50,
        ),  # fmt: skip
        train_dataset=sft_rows,
        processing_class=tokenizer,
    )
    sft.train()
    sft.save_model(str(tmp_path / "sft"))
    prompts = [r["prompt"] for r in test]
    sft_flagged = flagged_rate(sft.model, tokenizer, prompts)
    assert sft_flagged > 0.3, f"the SFT model should say flagged things often, got {sft_flagged}"

    d2o = get_method("d2o")
    trainer = d2o.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tmp_path / "sft"),
        args=train_args(
            d2o,
            tmp_path / "d2o",
            max_steps=30,
            learning_rate=5e-4,
            lr_scheduler_type="constant",
            per_device_train_batch_size=8,
            num_samples=4,
            sample_max_new_tokens=24,
            sample_cache_dir=str(tmp_path / "samples"),
            logging_steps=10,
        ),  # fmt: skip
        train_dataset=train,
        processing_class=tokenizer,
    )
    trainer.prepare_samples()
    draw = [
        (trainer.sample_data.prompts[i], s) for i, row in enumerate(trainer.samples.completions) for s in row
    ]
    safe_samples = [(p, s) for p, s in draw if not sp.is_flagged(s)]
    negatives = [(r["prompt"], n) for r in train for n in r["rejected"]]
    before = {
        "negatives": per_token_logp(trainer.model, tokenizer, negatives),
        "safe samples": per_token_logp(trainer.model, tokenizer, safe_samples),
    }
    trainer.train()
    model = trainer.model.eval()
    after = {
        "negatives": per_token_logp(model, tokenizer, negatives),
        "safe samples": per_token_logp(model, tokenizer, safe_samples),
    }
    d2o_flagged = flagged_rate(model, tokenizer, prompts)
    report = f"before {before}, after {after}, flagged {sft_flagged:.3f} -> {d2o_flagged:.3f}"
    assert safe_samples, "the SFT model drew no safe sample at all"
    assert after["negatives"] < before["negatives"] - 0.05, report
    assert after["safe samples"] > before["safe samples"] - 0.05, report  # no collapse
    assert d2o_flagged < sft_flagged, report
