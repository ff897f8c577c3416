"""WPN's trainer: the pooled states come from the one shared forward, the loss is the spec's, and a
short run moves the prompts' representation towards the harmless reply and away from the harmful ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trainer_helpers import snapshot, train_args
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit import get_method
from alignkit.data import PreferenceCollator
from alignkit.data.synthetic.harmful import harmless_response_task

ROWS = harmless_response_task(8, negatives_per_prompt=2, seed=0).records


@torch.no_grad()
def independent_margins(model, tokenizer, rows, temperature=0.1, anchor_model=None):
    """Per prompt: cos(a, p) - max_j cos(a, n_j), and the N-pair loss, from ``output_hidden_states[-1]``.

    Written without alignkit's pooling: each row's span is taken out by index and weighted 1..n. The
    anchor comes from ``anchor_model`` when given (WPN's ``anchor_from="reference"``).
    """
    collator = PreferenceCollator(tokenizer)
    margins, losses = [], []
    was_training = model.training
    model.eval()
    for row in rows:
        batch = collator([row])
        states, anchor_states = (
            m(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=True,
            ).hidden_states[-1]
            for m in (model, anchor_model or model)
        )

        def pool(h, positions):
            w = torch.arange(1, len(positions) + 1, dtype=h.dtype)
            return (h[positions] * w[:, None]).sum(0) / w.sum()

        pooled = []
        for i in range(states.shape[0]):
            completion = batch["completion_mask"][i].nonzero().flatten()
            pooled.append(pool(states[i], completion))
        prompt_len = int(batch["completion_mask"][0].nonzero()[0])
        anchor = pool(anchor_states[0], torch.arange(prompt_len))
        cos = torch.stack([F.cosine_similarity(anchor, e, 0) for e in pooled])
        margins.append(float(cos[0] - cos[1:].max()))
        losses.append(float(torch.logsumexp(cos / temperature, 0) - cos[0] / temperature))
    model.train(was_training)
    return sum(margins) / len(margins), sum(losses) / len(losses)


def make_trainer(model_dir, tmp_path, **overrides):
    spec = get_method("wpn")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = train_args(spec, tmp_path, **overrides)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return spec.trainer_cls(model=model, args=args, train_dataset=ROWS, processing_class=tokenizer), tokenizer


def test_first_loss_is_the_independent_loss_and_one_forward(tiny_model_dir, tmp_path):
    """The loss of the first step equals the N-pair loss computed from hidden_states[-1] here, and the
    model runs exactly one forward per step (the hook, not a second pass)."""
    trainer, tokenizer = make_trainer(tiny_model_dir, tmp_path, max_steps=1, per_device_train_batch_size=8)
    _, expected = independent_margins(trainer.model, tokenizer, ROWS)
    rows = []
    handle = trainer.model.register_forward_hook(
        lambda _m, _a, kwargs, _o: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    trainer.train()
    handle.remove()
    first = trainer.state.log_history[0]
    assert first["loss/method"] == pytest.approx(expected, abs=1e-5)
    # One forward over the 8 x 3 rows; any other call is the compact head's one-time check on one row.
    assert rows.count(24) == 1 and set(rows) <= {1, 24}, rows
    for key in ("wpn/cos_positive", "wpn/cos_negative_max", "wpn/solved", "logps/chosen", "logps/rejected"):
        assert key in first, sorted(first)


@pytest.mark.parametrize("anchor_from", ["policy", "reference"])
def test_run_moves_the_anchor_towards_the_harmless_reply(anchor_from, tiny_model_dir, tmp_path):
    trainer, tokenizer = make_trainer(
        tiny_model_dir, tmp_path, max_steps=6, per_device_train_batch_size=8, anchor_from=anchor_from
    )
    before_params = snapshot(trainer.model)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir) if anchor_from == "reference" else None
    margin0, loss0 = independent_margins(trainer.model, tokenizer, ROWS, anchor_model=start)
    trainer.train()
    margin1, loss1 = independent_margins(trainer.model, tokenizer, ROWS, anchor_model=start)
    assert margin1 > margin0 + 0.1, (margin0, margin1)
    assert loss1 < loss0, (loss0, loss1)
    moved = [n for n, p in trainer.model.named_parameters() if not torch.equal(before_params[n], p)]
    assert moved, "no parameter moved"
    if anchor_from == "reference":
        assert trainer.ref_mode == "model" and trainer.ref_model is not None


def test_anchor_from_reference_equals_policy_at_the_start(tiny_model_dir, tmp_path):
    """Reference == policy before the first step: both anchors give the same first loss."""
    values = []
    for anchor_from in ("policy", "reference"):
        trainer, _ = make_trainer(
            tiny_model_dir,
            tmp_path / anchor_from,
            max_steps=1,
            per_device_train_batch_size=8,
            anchor_from=anchor_from,
        )
        trainer.train()
        values.append(trainer.state.log_history[0]["loss/method"])
    assert values[0] == pytest.approx(values[1], abs=1e-6)


def test_rows_without_a_harmless_reply_are_refused(tiny_model_dir, tmp_path):
    from alignkit.data import RecordError

    spec = get_method("wpn")
    with pytest.raises(RecordError, match="WPN needs one `chosen`"):
        spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            args=train_args(spec, tmp_path),
            train_dataset=[{"question": "Who?", "answer": "Nobody."}],
            processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"anchor_from": "frozen"}, "anchor_from"),
        ({"pool_span": "all"}, "pool_span"),
        ({"similarity": "l1"}, "similarity"),
    ],
)
def test_config_values_refused(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        get_method("wpn").make_config(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)


def test_lora_with_the_frozen_anchor_reads_the_adapter_free_model(tiny_model_dir, tmp_path):
    """With LoRA the reference anchor is the same model with adapters off; at the start (LoRA B = 0) the
    first loss is the plain model's independent loss, and only the adapters train."""
    from peft import LoraConfig

    spec = get_method("wpn")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    _, expected = independent_margins(model, tokenizer, ROWS)
    trainer = spec.trainer_cls(
        model=model,
        args=train_args(spec, tmp_path, max_steps=2, per_device_train_batch_size=8, anchor_from="reference"),
        train_dataset=ROWS,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    assert trainer.ref_mode == "adapter_off"
    trainer.train()
    assert trainer.state.log_history[0]["loss/method"] == pytest.approx(expected, abs=1e-5)
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
