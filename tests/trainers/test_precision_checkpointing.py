"""Activation checkpointing and bf16 autocast (CPU) train the same model as the plain fp32 run."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig
from trainer_helpers import FORGET, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method


def _losses(model_dir, tokenizer, tmp_path, peft: bool, dtype=None, **overrides) -> list[float]:
    spec = get_method("npo")
    # LoRA moves few weights: a 10x higher LR makes its 3 steps move the loss well past bf16 rounding.
    args = train_args(spec, tmp_path, max_steps=3, learning_rate=1e-2 if peft else 1e-3, **overrides)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM") if peft else None
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype),
        args=args,
        train_dataset=FORGET,
        processing_class=tokenizer,
        peft_config=lora,
    )
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_checkpointing_matches_plain_run(unlearn_model_dir, unlearn_tokenizer, tmp_path, peft):
    plain = _losses(unlearn_model_dir, unlearn_tokenizer, tmp_path / "plain", peft)
    checkpointed = _losses(
        unlearn_model_dir, unlearn_tokenizer, tmp_path / "ckpt", peft, activation_checkpointing=True
    )
    # Recomputing activations changes nothing but memory: the same losses, step by step.
    assert checkpointed == pytest.approx(plain, abs=1e-4)
    assert plain[0] == pytest.approx(2 / 0.1 * math.log(2), abs=1e-4)
    assert plain[-1] < plain[0]  # NPO is lowering the forget log-likelihood


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_bf16_autocast_trains_close_to_fp32(unlearn_model_dir, unlearn_tokenizer, tmp_path, peft):
    fp32 = _losses(unlearn_model_dir, unlearn_tokenizer, tmp_path / "fp32", peft)
    bf16 = _losses(
        unlearn_model_dir,
        unlearn_tokenizer,
        tmp_path / "bf16",
        peft,
        bf16=True,
        activation_checkpointing=True,
    )
    assert all(math.isfinite(x) for x in bf16)
    # bf16 has ~3 significant digits; the losses are O(10), so they agree to a few hundredths.
    assert bf16 == pytest.approx(fp32, rel=2e-2)
    assert bf16[-1] < bf16[0]


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_bf16_weights_with_bf16_autocast_train_on_cpu(unlearn_model_dir, unlearn_tokenizer, tmp_path, peft):
    """What recipes/templates/*_lora.yaml set (`dtype: bfloat16` + `bf16: true`): the model's outputs
    come back in float32 from accelerate's autocast wrapper while the LM head is bf16; the compact head
    used to fail with "expected m1 and m2 to have the same dtype"."""
    fp32 = _losses(unlearn_model_dir, unlearn_tokenizer, tmp_path / "fp32", peft)
    bf16 = _losses(
        unlearn_model_dir, unlearn_tokenizer, tmp_path / "bf16", peft, dtype=torch.bfloat16, bf16=True
    )
    assert all(math.isfinite(x) for x in bf16)
    assert bf16 == pytest.approx(fp32, rel=5e-2)  # bf16 weights: ~3 significant digits, O(10) losses
    assert bf16[-1] < bf16[0]
