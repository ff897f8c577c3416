"""Trainer-level fidelity: retain KL over the retain rows' own positions, eval_loss = the training objective,
IdkDPO's answer file and role pairing, RMU's hidden-state plumbing, CATNIP's reconstruction name."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from trainer_helpers import FORGET, RETAIN, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.data import PreferenceCollator

SHORT = [{"question": "Who?", "answer": "Arlo."}] * 2
LONG = [
    {
        "question": "Where was Arlo born, and what did he do in the years that followed his move?",
        "answer": "Arlo was born in Oslo in 1950, moved to Lima, and spent forty years writing long novels there.",
    }
] * 2


def _batch(trainer, forget_rows, retain_rows):
    """Forget rows paired with the given retain rows, as ForgetRetainDataset pairs them."""
    encode = trainer.collator.encode
    items = []
    for i, (f, r) in enumerate(zip(forget_rows, retain_rows)):
        item, ret = encode(f, i), encode(r, i)
        item["retain_prompt_ids"], item["retain_completion_ids"] = ret["prompt_ids"], ret["completion_ids"]
        items.append(item)
    return trainer.data_collator(items)


@torch.no_grad()
def _independent_retain_kl(policy, reference, tokenizer, rows):
    """KL(ref || policy) averaged over every position of the retain rows padded to their own longest row
    (open-unlearning's batchmean over the flattened retain batch), from plain HF forwards."""
    batch = PreferenceCollator(tokenizer)(rows)
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logp = F.log_softmax(policy(**kwargs).logits[:, :-1].double(), -1)
    ref = F.log_softmax(reference(**kwargs).logits[:, :-1].double(), -1)
    return F.kl_div(logp.flatten(0, 1), ref.flatten(0, 1), reduction="batchmean", log_target=True).item()


def test_retain_kl_all_positions_independent_of_forget_rows(
    tiny_model_dir, unlearn_model_dir, tokenizer, tmp_path
):
    spec = get_method("ga_kl")
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),  # policy != reference: KL > 0
        args=train_args(spec, tmp_path),
        train_dataset=FORGET,
        retain_dataset=RETAIN,
        processing_class=tokenizer,
    )
    assert trainer.args.kl_positions == "all"
    trainer.model.eval()
    retain_rows = RETAIN[:2]
    values = []
    for forget_rows in (SHORT, LONG):
        batch = _batch(trainer, forget_rows, retain_rows)
        with torch.no_grad():
            values.append(float(trainer.retain_loss(trainer.forward(trainer.model, batch)).loss))
    expected = _independent_retain_kl(trainer.model, trainer.ref_model, tokenizer, retain_rows)
    assert expected > 1e-2  # the comparison is not vacuous
    assert values[0] == pytest.approx(expected, abs=1e-5), values
    assert values[1] == pytest.approx(expected, abs=1e-5), values


def test_retain_kl_adapter_off_reference_applies_its_head_without_the_adapter(
    unlearn_model_dir, tokenizer, tmp_path
):
    """The retain logits reach the loss as lazy ``HeadLogits`` (the head applied a chunk at a time, after
    the forward): the adapter-off reference must still run its head with the adapter off. With LoRA on
    the LM head itself, applying the reference's head outside that context would give KL = 0."""
    from peft import LoraConfig

    from alignkit.models.head import HeadLogits

    spec = get_method("ga_kl")
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
        args=train_args(spec, tmp_path),
        train_dataset=FORGET,
        retain_dataset=RETAIN,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["lm_head"], task_type="CAUSAL_LM"),
    )
    assert trainer.ref_mode == "adapter_off"
    peft_model = trainer.model.eval()
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    out = trainer.forward(peft_model, _batch(trainer, SHORT, RETAIN[:2]))
    assert isinstance(out.retain.logits, HeadLogits) and isinstance(out.retain_ref.logits, HeadLogits)
    with torch.no_grad():
        value = float(trainer.retain_loss(out).loss)

    def adapter_off(**kwargs):
        with peft_model.disable_adapter():
            return peft_model(**kwargs)

    expected = _independent_retain_kl(peft_model, adapter_off, tokenizer, RETAIN[:2])
    assert expected > 1e-2  # the adapter on the head moved the policy off the reference
    assert value == pytest.approx(expected, abs=1e-5)


def test_eval_loss_is_the_training_objective(unlearn_model_dir, tokenizer, tmp_path):
    """With a retain term, eval_loss = γ·forget + α·retain on eval rows paired with retain rows, both logged."""
    spec = get_method("graddiff")
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
        args=train_args(spec, tmp_path, retain_weight=2.0),
        train_dataset=FORGET,
        eval_dataset=FORGET[:4],
        retain_dataset=RETAIN,
        processing_class=tokenizer,
    )
    metrics = trainer.evaluate()
    forget, retain = metrics["eval_loss/method"], metrics["eval_loss/retain"]
    assert retain == pytest.approx(metrics["eval_retain/nll"], abs=1e-6)
    assert retain > 1e-3
    assert metrics["eval_loss"] == pytest.approx(forget + 2.0 * retain, abs=1e-5), metrics
    again = trainer.evaluate(eval_dataset=FORGET[:4])  # rows given at call time are paired the same way
    assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], abs=1e-5)


def test_idk_file_answers_and_role_pairing(tiny_model_dir, tokenizer, tmp_path):
    """TOFU's idontknow.jsonl (plain lines) is read; chosen/rejected are paired by role, not row position."""
    path = tmp_path / "idontknow.jsonl"
    path.write_text(
        "I have no clue.\n\n" + json.dumps({"answer": "Not known to me."}) + "\n", encoding="utf-8"
    )
    spec = get_method("idk_dpo")
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=train_args(spec, tmp_path / "run", idk_file=str(path)),
        train_dataset=FORGET,
        processing_class=tokenizer,
    )
    assert trainer._idk_answers == ("I have no clue.", "Not known to me.")
    texts = {
        tokenizer.decode(r["completion_ids"][0], skip_special_tokens=True).strip()
        for r in trainer.train_dataset
    }
    assert texts <= {"I have no clue.", "Not known to me."}

    # Reversed row order within every group must give the same loss.
    trainer.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        loss = float(trainer.compute_loss(trainer.model, batch))
        swapped = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
        n = batch["num_main"]
        order = torch.arange(n).view(-1, 2).flip(-1).reshape(-1)
        for key in ("input_ids", "attention_mask", "completion_mask"):
            swapped[key] = torch.cat([batch[key][:n][order], batch[key][n:]])
        swapped["roles"] = batch["roles"][order]
        assert not torch.equal(swapped["roles"], batch["roles"])
        assert float(trainer.compute_loss(trainer.model, swapped)) == pytest.approx(loss, abs=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("", "holds no answers"), ('{"other": 1}\n', "line 1: expected text")],
)
def test_idk_file_errors_name_the_file(content, message, tiny_model_dir, tokenizer, tmp_path):
    path = tmp_path / "idk.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    spec = get_method("idk_dpo")
    with pytest.raises(ValueError, match=message) as info:
        spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=train_args(spec, tmp_path / "run", idk_file=str(path)),
            train_dataset=FORGET,
            processing_class=tokenizer,
        )
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_catnip_registered_as_reconstruction_with_alias():
    spec, alias = get_method("catnip_reconstructed"), get_method("catnip")
    assert alias.trainer_cls is spec.trainer_cls and spec.trainer_cls.method_name == "catnip_reconstructed"
    assert "RECONSTRUCTION" in spec.summary and "RECONSTRUCTION" in spec.trainer_cls.__doc__


def test_rmu_reads_block_output_from_the_shared_forward(unlearn_model_dir, tokenizer, tmp_path):
    """The hooked activations equal output_hidden_states[L+1] of a plain forward; at step 0 EMBED_DIFF is 0
    and the forget term is the independent masked MSE to the control vector; block > L params are frozen."""
    spec = get_method("rmu")
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
        args=train_args(spec, tmp_path, layer=0, steering_coeff=3.0),
        train_dataset=FORGET,
        retain_dataset=RETAIN,
        processing_class=tokenizer,
    )
    frozen = {n for n, p in trainer.model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("model.layers.1.", "model.norm", "lm_head")) for n in frozen), frozen
    trainer.model.eval()
    batch = _batch(trainer, FORGET[:2], RETAIN[:2])
    with torch.no_grad():
        out = trainer.forward(trainer.model, batch)
        n = batch["num_main"]
        plain = trainer.model(
            input_ids=batch["input_ids"][:n],
            attention_mask=batch["attention_mask"][:n],
            output_hidden_states=True,
        ).hidden_states[1]
        length = out.policy.hidden.shape[1]
        torch.testing.assert_close(out.policy.hidden, plain[:, :length], atol=1e-5, rtol=0)
        assert float(trainer.retain_loss(out).loss) == pytest.approx(0.0, abs=1e-10)
        mask = batch["completion_mask"][:n, :length].bool()
        per_row = [((plain[i, :length][mask[i]] - trainer.control) ** 2).mean(-1).mean() for i in range(n)]
        forget = float(trainer.method_loss(out).loss)
        assert forget == pytest.approx(float(sum(per_row) / n), rel=1e-5)
        assert trainer.control.norm().item() == pytest.approx(3.0, rel=1e-6)


def test_rmu_refuses_a_layer_the_model_lacks(unlearn_model_dir, tokenizer, tmp_path):
    spec = get_method("rmu")
    with pytest.raises(ValueError, match=r"`layer=7` but the model has 2 decoder blocks"):
        spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
            args=train_args(spec, tmp_path, layer=7),
            train_dataset=FORGET,
            retain_dataset=RETAIN,
            processing_class=tokenizer,
        )


def test_rmu_lora_preset_and_dead_adapters(unlearn_model_dir, tokenizer, tmp_path):
    """Adapters on a block after L are refused; the 'wmdp' preset puts them on down_proj of blocks <= L."""
    from peft import LoraConfig

    spec = get_method("rmu")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM")

    def build(**kw):
        return spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
            args=train_args(spec, tmp_path, layer=0, **kw),
            train_dataset=FORGET,
            retain_dataset=RETAIN,
            processing_class=tokenizer,
            peft_config=lora,
        )

    with pytest.raises(ValueError, match=r"can never receive a gradient .*layers\.1\."):
        build()
    trainer = build(rmu_lora_preset="wmdp", max_steps=2)
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all("layers.0.mlp.down_proj" in n for n in trained), trained
    assert trainer.ref_mode == "adapter_off"
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["retain/embed_diff"])
