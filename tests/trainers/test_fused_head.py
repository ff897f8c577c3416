"""The fused-LM-head switch: both paths train identically; `auto` picks by device and vocabulary."""

from __future__ import annotations

import pytest
import torch
from trainer_helpers import FORGET, RETAIN, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.trainers.forward import FUSED_HEAD_MIN_VOCAB, resolve_fused_lm_head


def _run(model_dir, tokenizer, tmp_path, setting):
    spec = get_method("npo")
    args = train_args(
        spec,
        tmp_path / setting,
        max_steps=3,
        retain_loss="nll",
        fused_lm_head=setting,
        train_sampling_strategy="sequential",
    )
    trainer = spec.trainer_cls(
        AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=FORGET,
        retain_dataset=RETAIN,
        processing_class=tokenizer,
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return trainer, losses


def test_fused_and_plain_head_train_the_same(unlearn_model_dir, unlearn_tokenizer, tmp_path):
    fused, fused_losses = _run(unlearn_model_dir, unlearn_tokenizer, tmp_path, "on")
    plain, plain_losses = _run(unlearn_model_dir, unlearn_tokenizer, tmp_path, "off")
    assert (fused.fused_lm_head, plain.fused_lm_head) == (True, False)
    assert len(fused_losses) == 3
    assert fused_losses == pytest.approx(plain_losses, rel=1e-5)
    for (name, a), b in zip(fused.model.named_parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_auto_is_off_on_cpu_and_recorded(unlearn_model_dir, unlearn_tokenizer, tmp_path):
    spec = get_method("npo")
    trainer = spec.trainer_cls(
        str(unlearn_model_dir),
        args=train_args(spec, tmp_path / "run"),
        train_dataset=FORGET,
        processing_class=unlearn_tokenizer,
    )
    assert trainer.fused_lm_head is False
    assert trainer.lm_head_path == "off (auto: device cpu, the fused head is slower off CUDA/XPU)"


@pytest.mark.parametrize(
    ("setting", "device", "vocab", "available", "expected"),
    [
        ("auto", "cuda", FUSED_HEAD_MIN_VOCAB, True, True),
        ("auto", "cuda", FUSED_HEAD_MIN_VOCAB - 1, True, False),
        ("auto", "xpu", 128256, True, True),
        ("auto", "cpu", 128256, True, False),
        ("auto", "cuda", 128256, False, False),
        ("on", "cpu", 400, True, True),
        ("off", "cuda", 128256, True, False),
    ],
)
def test_auto_rule(setting, device, vocab, available, expected):
    used, why = resolve_fused_lm_head(setting, device_type=device, vocab_size=vocab, available=available)
    assert used is expected
    assert why.startswith("on" if expected else "off")


def test_on_without_the_trl_kernel_is_refused():
    with pytest.raises(ValueError, match="fused_lm_head='on'.*set fused_lm_head='auto' or 'off'"):
        resolve_fused_lm_head("on", device_type="cuda", vocab_size=128256, available=False)


def test_bad_setting_is_refused(tmp_path):
    spec = get_method("npo")
    with pytest.raises(ValueError, match="`fused_lm_head` must be one of"):
        train_args(spec, tmp_path, fused_lm_head="yes")
