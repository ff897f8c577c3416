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


def _batch(tokenizer):
    from alignkit.data import PreferenceCollator

    collator = PreferenceCollator(tokenizer, boundary="joint")
    rows = [collator.encode(r) for r in FORGET[:3] + RETAIN[:2]]
    return collator(rows)


def _logps_and_grads(model, batch, **kwargs):
    from alignkit.trainers.forward import row_outputs

    model.zero_grad()
    out = row_outputs(model, batch, **kwargs)
    out.seq_logps.sum().backward()
    return out.token_logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_compact_head_matches_full_logits(unlearn_model_dir, unlearn_tokenizer):
    """The default CPU path (LM head on completion positions only) gives the full-logits values and gradients."""
    model = AutoModelForCausalLM.from_pretrained(unlearn_model_dir)
    batch = _batch(unlearn_tokenizer)
    compact, g_compact = _logps_and_grads(model, batch, want_logits=False, fused=False)
    assert model._alignkit_compact_head is True
    full, g_full = _logps_and_grads(model, batch, want_logits=True, fused=False)
    assert compact.shape == full.shape
    torch.testing.assert_close(compact, full, rtol=1e-5, atol=1e-6)
    for name in g_full:
        torch.testing.assert_close(g_compact[name], g_full[name], rtol=1e-4, atol=1e-6, msg=name)
    # A subset of rows is narrower than the batch: cut, then padded back to the batch's shape.
    rows = {k: batch[k][3:] for k in ("input_ids", "attention_mask", "completion_mask")}
    sub, _ = _logps_and_grads(model, rows, want_logits=False, fused=False)
    torch.testing.assert_close(sub, full[3:], rtol=1e-5, atol=1e-6)


def test_compact_head_is_refused_for_a_model_that_transforms_its_logits(unlearn_model_dir, unlearn_tokenizer):
    from transformers import LlamaForCausalLM

    class ScaledLogits(LlamaForCausalLM):  # as Cohere/Granite-style models scale after the head
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0
            return out

    model = ScaledLogits.from_pretrained(unlearn_model_dir)
    batch = _batch(unlearn_tokenizer)
    compact, _ = _logps_and_grads(model, batch, want_logits=False, fused=False)
    assert model._alignkit_compact_head is False
    full, _ = _logps_and_grads(model, batch, want_logits=True, fused=False)
    torch.testing.assert_close(compact, full, rtol=1e-5, atol=1e-6)
