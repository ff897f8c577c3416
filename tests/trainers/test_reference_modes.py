"""The reference modes agree, and the precomputed cache is reused but never stale.

``model`` (a frozen copy), ``adapter_off`` (the PEFT model with its adapters disabled) and
``precomputed`` (one pass before training, cached on disk) must give the same reference log-probs and
hence the same NPO loss. At step 0 the policy equals the reference and every mode gives the trivial
(2/β)·log 2, so the policy is perturbed first (the same perturbation in every mode).
"""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig
from trainer_helpers import FORGET, answer_logps, cache_files, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.trainers import ref_cache

BETA = 0.1


def lora_config() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def npo_trainer(
    model_dir, tokenizer, tmp_path, *, ref_mode, peft=False, rows=FORGET, model=None, method="npo", **kw
):
    spec = get_method(method)
    args = train_args(
        spec,
        tmp_path / f"run-{ref_mode}",
        ref_mode=ref_mode,
        ref_cache_dir=str(tmp_path / "cache"),
        beta=BETA,
        **kw,
    )
    return spec.trainer_cls(
        model=model if model is not None else AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=lora_config() if peft else None,
    )


@torch.no_grad()
def perturb(model, *, only_lora: bool, seed: int = 0) -> None:
    """Overwrite (LoRA) or nudge (full) the trainable weights with seeded noise, identically per mode."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if only_lora:
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        else:
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)


def first_batch(trainer, n=4):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def loss_and_ref(trainer, batch):
    with torch.no_grad():
        loss = float(trainer.compute_loss(trainer.model, batch))
        out = trainer.forward(trainer.model, batch)
    return loss, out.ref_seq_logps.detach()


def test_fresh_lora_adapter_off_is_the_base_model(tiny_model_dir, tokenizer, tmp_path):
    """With a fresh LoRA (B = 0) the policy, the adapter-off reference and the base model coincide."""
    trainer = npo_trainer(tiny_model_dir, tokenizer, tmp_path, ref_mode="adapter_off", peft=True)
    assert trainer.ref_mode == "adapter_off" and trainer.ref_model is None
    batch = first_batch(trainer)
    with torch.no_grad():
        out = trainer.forward(trainer.model, batch)
    base, _ = answer_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, FORGET[:4])
    torch.testing.assert_close(out.ref_seq_logps, base, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.policy.seq_logps, base, atol=1e-4, rtol=0)


def test_three_reference_modes_give_the_same_npo_loss(tiny_model_dir, tokenizer, tmp_path):
    """Same LoRA policy (perturbed away from the base) in every mode; the reference is the base model.

    ``model`` keeps a frozen copy taken before the adapters are added, ``adapter_off`` disables them,
    ``precomputed`` ran the adapter-off pass once at construction. All must agree to 1e-5.
    """
    base, _ = answer_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, FORGET[:4])
    results = {}
    for mode in ("model", "adapter_off", "precomputed"):
        trainer = npo_trainer(tiny_model_dir, tokenizer, tmp_path, ref_mode=mode, peft=True)
        assert trainer.ref_mode == mode
        assert (trainer.ref_model is not None) == (mode == "model")
        batch = first_batch(trainer)
        assert ("ref_logps" in batch) == (mode == "precomputed")
        perturb(trainer.model, only_lora=True)
        results[mode] = loss_and_ref(trainer, batch)

    trivial = 2.0 / BETA * math.log(2.0)
    loss_model, ref_model = results["model"]
    assert abs(loss_model - trivial) > 0.05, "the perturbation did not move the policy off the reference"
    for mode, (loss, ref) in results.items():
        assert loss == pytest.approx(loss_model, abs=1e-5), (mode, loss, loss_model)
        torch.testing.assert_close(ref, ref_model, atol=1e-4, rtol=0, msg=f"{mode} reference log-probs")
        torch.testing.assert_close(ref, base, atol=1e-4, rtol=0, msg=f"{mode} reference vs the base model")


@pytest.mark.parametrize("method", ["npo", "idk_dpo"])
def test_full_model_reference_and_precomputed_agree(method, tiny_model_dir, tokenizer, tmp_path):
    """Full fine-tuning: a frozen copy and the precomputed cache give the same loss, step by step.

    IdkDPO has two completions per row (IDK answer, forget answer), so the cache's per-row groups
    must come back in order.
    """
    losses, histories = {}, {}
    for mode in ("model", "precomputed"):
        trainer = npo_trainer(tiny_model_dir, tokenizer, tmp_path, ref_mode=mode, method=method)
        batch = first_batch(trainer)
        snapshot = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        perturb(trainer.model, only_lora=False)
        losses[mode] = loss_and_ref(trainer, batch)[0]
        with torch.no_grad():  # undo the perturbation, then train both the same way
            for n, p in trainer.model.named_parameters():
                p.copy_(snapshot[n])
        trainer.args.max_steps = 3
        trainer.train()
        histories[mode] = [log["loss"] for log in trainer.state.log_history[:-1]]
    assert abs(losses["model"] - 2.0 / BETA * math.log(2.0)) > 0.05
    assert losses["precomputed"] == pytest.approx(losses["model"], abs=1e-5)
    assert len(histories["model"]) == 3
    # Training batches are padded differently from the precompute pass: agreement to 1e-4.
    assert histories["precomputed"] == pytest.approx(histories["model"], abs=1e-4)


# --------------------------------------------------------------------------- precompute cache


def test_precompute_cache_is_reused_and_never_stale(tiny_model_dir, tokenizer, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = npo_trainer(tiny_model_dir, tokenizer, tmp_path, ref_mode="precomputed")
    (path,) = cache_files(cache)
    stamp = path.stat().st_mtime_ns
    values = first.train_dataset["ref_logps"]
    expected, _ = answer_logps(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, FORGET)
    torch.testing.assert_close(torch.tensor([v[0] for v in values]), expected, atol=1e-4, rtol=0)

    # Same weights, same data: the cached file is read and nothing is computed.
    def refuse(*args, **kwargs):
        raise AssertionError("reference log-probs were recomputed although the cache matches")

    with monkeypatch.context() as patch:
        patch.setattr(ref_cache, "compute_ref_logps", refuse)
        second = npo_trainer(tiny_model_dir, tokenizer, tmp_path, ref_mode="precomputed")
    assert cache_files(cache) == [path] and path.stat().st_mtime_ns == stamp
    assert second.train_dataset["ref_logps"] == values

    # Different weights (one tiny nudge): a new key, and values of the new model.
    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        other.model.norm.weight.add_(0.05)
    other_expected, _ = answer_logps(other, tokenizer, FORGET)
    third = npo_trainer(tiny_model_dir, tokenizer, tmp_path, ref_mode="precomputed", model=other)
    assert len(cache_files(cache)) == 2
    third_values = torch.tensor([v[0] for v in third.train_dataset["ref_logps"]])
    torch.testing.assert_close(third_values, other_expected, atol=1e-4, rtol=0)
    assert not torch.allclose(third_values, expected, atol=1e-3), "nudged model gave the cached values"

    # Different data (other rows, or the same rows truncated): a new key each time.
    npo_trainer(tiny_model_dir, tokenizer, tmp_path, ref_mode="precomputed", rows=FORGET[:5])
    assert len(cache_files(cache)) == 3
    npo_trainer(tiny_model_dir, tokenizer, tmp_path, ref_mode="precomputed", max_completion_length=6)
    assert len(cache_files(cache)) == 4
    assert path.stat().st_mtime_ns == stamp, "the first cache file was rewritten"


def test_a_lora_trainer_prints_no_future_warning(tiny_model_dir, tokenizer, tmp_path):
    """Issue #20's noise: peft's PeftModel read transformers' deprecated `is_gradient_checkpointing`, a
    FutureWarning on every LoRA run (recipes/templates/*_lora.yaml, generated_tofu/npo_lora.yaml)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        npo_trainer(tiny_model_dir, tokenizer, tmp_path, ref_mode="adapter_off", peft=True)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
