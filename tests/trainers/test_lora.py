"""LoRA: only the adapters train, and the reference is the adapter-off base model (no second copy)."""

from __future__ import annotations

import gc

import pytest
import torch
from peft import LoraConfig, PeftModel
from trainer_helpers import FORGET, RETAIN, train_args, uses_retain
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from alignkit import get_method


def live_llamas() -> int:
    gc.collect()
    return sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects())


@pytest.mark.parametrize("name", ["npo", "npo_kl"])
def test_lora_trains_only_adapters_against_adapter_off(name, tiny_model_dir, tokenizer, tmp_path):
    spec = get_method(name)
    # lr 1e-2: LoRA starts with B = 0 and must move every A and B matrix in 4 steps.
    args = train_args(spec, tmp_path, max_steps=4, learning_rate=1e-2)
    assert args.ref_mode == "auto"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    llamas = live_llamas()
    base_before = {id(p): p.detach().clone() for p in model.parameters()}

    trainer = spec.trainer_cls(
        model=model,
        args=args,
        train_dataset=FORGET,
        retain_dataset=RETAIN if uses_retain(args) else None,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert isinstance(trainer.model, PeftModel)
    assert trainer.ref_mode == "adapter_off"
    assert trainer.ref_model is None
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()

    # No second copy of the base model was kept anywhere (a deepcopy for the reference would be one).
    assert live_llamas() == llamas, "a second LlamaForCausalLM is alive: the reference was copied"
    assert trainer.model.get_base_model() is model

    lora, unchanged, moved_base = [], [], []
    for n, p in trainer.model.named_parameters():
        if "lora_" in n:
            lora.append(n)
            assert p.requires_grad, n
            if torch.equal(p, lora_before[n]):
                unchanged.append(n)
        else:
            assert not p.requires_grad, f"base parameter {n} is trainable"
            assert id(p) in base_before, f"base parameter {n} is not the original tensor"
            if not torch.equal(p, base_before[id(p)]):
                moved_base.append(n)
    assert len(lora) == 2 * 2 * model.config.num_hidden_layers  # A and B of q_proj, v_proj per layer
    assert not moved_base, f"base weights changed: {moved_base}"
    assert not unchanged, f"adapter weights did not train: {unchanged}"
    # The adapters moved the policy away from the (adapter-off) reference.
    assert trainer.state.log_history[-2]["logratio/answer"] < -1e-3
