"""D²O and the sampler it trains on, with a real tiny model throughout (no mock of the sampler).

* seeded sampling: same seed -> identical samples at any batch size; another seed -> others;
* the offline cache: a second run with the same inputs never calls ``generate``; other sampling
  settings or other weights miss the cache;
* online mode (re-sampling, reference copies) killed at a checkpoint and resumed continues with the
  same samples, references and parameters;
* filters (the human negative never among its own samples, a user callable, empties) and their counts;
* bad input gives one line naming the row/field/setting.
"""

from __future__ import annotations

import pytest
import torch
from trainer_helpers import StopAt, snapshot, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.data.records import RecordError
from alignkit.data.synthetic.preference import safety_task
from alignkit.sampling import SamplingSettings, sample_prompts

ROWS = safety_task(8, seed=0).records  # {"prompt", "rejected"}


class CountingModel:
    """Counts the real model's ``generate`` calls (the model itself still generates)."""

    def __init__(self, model):
        self.calls = 0
        real = model.generate

        def generate(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        model.generate = generate
        self.model = model


def d2o_args(tmp_path, name="run", **overrides):
    kwargs = dict(
        max_steps=1,
        per_device_train_batch_size=4,
        num_samples=2,
        sample_max_new_tokens=8,
        sample_cache_dir=str(tmp_path / "cache"),
    )
    kwargs.update(overrides)
    return train_args(get_method("d2o"), tmp_path / name, **kwargs)


def d2o_trainer(model_dir, tokenizer, args, rows=ROWS, **kwargs):
    counter = CountingModel(AutoModelForCausalLM.from_pretrained(model_dir))
    trainer = get_method("d2o").trainer_cls(
        model=counter.model, args=args, train_dataset=rows, processing_class=tokenizer, **kwargs
    )
    return trainer, counter


def test_same_seed_same_samples_at_any_batch_size(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [tokenizer(r["prompt"])["input_ids"] for r in ROWS]

    def draw(**kw):
        settings = SamplingSettings(num_samples=3, max_new_tokens=8, **kw)
        return sample_prompts(model, tokenizer, prompts, settings, show_progress=False)

    one, eight = draw(batch_size=1), draw(batch_size=8)
    assert one.generate_calls == 8 and eight.generate_calls == 1
    assert one.completions == eight.completions
    assert len(one.completions) == 8 and all(len(c) == 3 for c in one.completions)
    assert len({c for row in one.completions for c in row}) > 8, "K samples of a prompt should differ"
    assert draw(batch_size=8, seed=1).completions != one.completions
    assert draw(batch_size=8, top_k=5).completions != one.completions


def test_cached_run_does_not_generate_again(tiny_model_dir, tokenizer, tmp_path):
    first, counted = d2o_trainer(tiny_model_dir, tokenizer, d2o_args(tmp_path, "a"))
    first.train()
    assert counted.calls == 1  # 8 prompts, one batch of 16 prompts
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1

    second, counted2 = d2o_trainer(tiny_model_dir, tokenizer, d2o_args(tmp_path, "b"))
    second.train()
    assert counted2.calls == 0
    assert second.samples.completions == first.samples.completions
    assert second.samples.ref_logps == first.samples.ref_logps
    # The first step saw the same data, so it logged the same loss.
    assert second.state.log_history[0]["loss"] == pytest.approx(first.state.log_history[0]["loss"], abs=1e-6)


def test_other_settings_or_weights_miss_the_cache(tiny_model_dir, tokenizer, tmp_path):
    base, counted = d2o_trainer(tiny_model_dir, tokenizer, d2o_args(tmp_path, "a", max_steps=0))
    base.prepare_samples()
    assert counted.calls == 1
    hotter, counted = d2o_trainer(tiny_model_dir, tokenizer, d2o_args(tmp_path, "b", sample_temperature=0.7))
    hotter.prepare_samples()
    assert counted.calls == 1
    other, counted = d2o_trainer(tiny_model_dir, tokenizer, d2o_args(tmp_path, "c"))
    with torch.no_grad():
        other.model.lm_head.weight.mul_(1.01)
    other.prepare_samples()
    assert counted.calls == 1
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3
    again, counted = d2o_trainer(tiny_model_dir, tokenizer, d2o_args(tmp_path, "d"))
    again.prepare_samples()
    assert counted.calls == 0


def test_filters_drop_the_negative_empties_and_user_rejects(tiny_model_dir, tokenizer, tmp_path):
    """A user backend returning, per prompt: the prompt's own negative, an empty string, a text the user
    filter rejects, and a good one; only the good one is kept and every drop is counted and logged."""
    negatives = {r["prompt"]: r["rejected"] for r in ROWS}
    prompt_of = {tuple(tokenizer(p)["input_ids"]): p for p in negatives}

    def backend(model, tok, prompt_ids, keys, settings, round_index):
        out = []
        for ids in prompt_ids:
            own = negatives[prompt_of[tuple(ids)]]
            out.append([f"  {own.upper()} ", "   ", "reject me", "A calm and kind talk may help."])
        return out, 0

    args = d2o_args(tmp_path, num_samples=4, sample_cache_dir=None)
    trainer, _ = d2o_trainer(
        tiny_model_dir,
        tokenizer,
        args,
        sampling_backend=backend,
        sample_filter=lambda p, negs, s: "reject" not in s,
    )
    trainer.train()
    assert trainer.samples.completions == [["A calm and kind talk may help."]] * 8
    assert trainer.samples.drops == {"empty": 8, "negative": 8, "filter": 8, "kept": 8}
    logged = trainer.state.log_history[0]
    assert logged["sampling/dropped_negative"] == 8 and logged["d2o/k_eff"] == 1


def test_missing_rejected_is_one_line(tiny_model_dir, tokenizer, tmp_path):
    rows = [ROWS[0], {"prompt": "Hello?"}]
    with pytest.raises(RecordError, match=r"^train_dataset, row 1, field `rejected`: is missing") as info:
        d2o_trainer(tiny_model_dir, tokenizer, d2o_args(tmp_path), rows=rows)
    assert "\n" not in str(info.value)


def test_zero_samples_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"`num_samples` \(K\) must be >= 1, got 0") as info:
        d2o_args(tmp_path, num_samples=0)
    assert "\n" not in str(info.value)


def test_sampler_returning_empty_completions_is_one_line(tiny_model_dir, tokenizer, tmp_path):
    def empty(model, tok, prompt_ids, keys, settings, round_index):
        return [[""] * settings.num_samples for _ in prompt_ids], 0

    trainer, _ = d2o_trainer(
        tiny_model_dir, tokenizer, d2o_args(tmp_path, sample_cache_dir=None), sampling_backend=empty
    )
    with pytest.raises(
        ValueError, match="no usable completion for any of the 8 prompts \\(dropped: 16 empty"
    ) as info:
        trainer.train()
    assert "\n" not in str(info.value)

    def short(model, tok, prompt_ids, keys, settings, round_index):
        return [["x"] for _ in prompt_ids], 0

    trainer, _ = d2o_trainer(
        tiny_model_dir, tokenizer, d2o_args(tmp_path, "b", sample_cache_dir=None), sampling_backend=short
    )
    with pytest.raises(ValueError, match="expected 2 per prompt"):
        trainer.train()


def test_bad_settings_name_the_field(tmp_path):
    for field, value in (("sample_temperature", 0.0), ("sample_top_p", 1.5), ("sample_from", "oracle")):
        with pytest.raises(ValueError, match=field.removeprefix("sample_")):
            d2o_args(tmp_path, **{field: value})
    with pytest.raises(ValueError, match="ref_mode='precomputed'"):
        d2o_args(tmp_path, ref_mode="precomputed")


def online_trainer(model_dir, tokenizer, tmp_path, name, callbacks=None):
    # 8 examples at batch 4: 2 steps per epoch. Re-sample at steps 2 and 4, copy the policy into the
    # reference at step 3; the resume from checkpoint-4 must redo the step-4 re-sampling from the
    # restored policy and reference (updated at step 3, restored from the checkpoint).
    args = d2o_args(
        tmp_path,
        name,
        max_steps=6,
        sample_refresh_every=2,
        ref_update_every=3,
        save_strategy="steps",
        save_steps=4,
        sample_cache_dir=str(tmp_path / name / "cache"),
    )
    trainer, _ = d2o_trainer(model_dir, tokenizer, args, callbacks=callbacks)
    return trainer


def test_online_resume_continues_with_the_same_samples_and_references(tiny_model_dir, tokenizer, tmp_path):
    straight = online_trainer(tiny_model_dir, tokenizer, tmp_path, "straight")
    straight.train()
    assert straight.samples.round == 2 and straight.samples.ref_version == 1

    first = online_trainer(tiny_model_dir, tokenizer, tmp_path, "resumed", callbacks=[StopAt(4)])
    first.train()
    assert first.state.global_step == 4 and first.samples.round == 1
    checkpoint = tmp_path / "resumed" / "checkpoint-4"
    assert (checkpoint / "self_samples.json").is_file() and (
        checkpoint / "d2o_reference.safetensors"
    ).is_file()

    second = online_trainer(tiny_model_dir, tokenizer, tmp_path, "resumed")
    second.train(resume_from_checkpoint=True)
    assert second.state.global_step == 6
    assert second.samples.round == 2 and second.samples.ref_version == 1
    assert second.samples.completions == straight.samples.completions
    torch.testing.assert_close(
        torch.tensor([v for row in second.samples.ref_logps for v in row]),
        torch.tensor([v for row in straight.samples.ref_logps for v in row]),
        atol=1e-5,
        rtol=0,
    )
    for (name, p), q in zip(second.ref_model.named_parameters(), straight.ref_model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)
    for (name, p), q in zip(second.model.named_parameters(), straight.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)
    losses = {h["step"]: h["loss"] for h in straight.state.log_history if "loss" in h}
    for h in second.state.log_history:
        if "loss" in h:
            assert h["loss"] == pytest.approx(losses[h["step"]], abs=1e-5), h["step"]


def test_d2o_moves_negative_down_and_keeps_samples(tiny_model_dir, tokenizer, tmp_path):
    """Real steps: the negatives' log-ratio falls, the self-samples' rises (no collapse), every weight moves."""
    args = d2o_args(tmp_path, max_steps=6, learning_rate=1e-3, num_samples=3)
    trainer, _ = d2o_trainer(tiny_model_dir, tokenizer, args)
    before = snapshot(trainer.model)
    trainer.train()
    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(before[n], p)]
    assert not unchanged, unchanged
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs[0]["loss"] == pytest.approx(0.6931471805599453, abs=1e-5)  # log 2: policy == reference
    last = logs[-1]
    assert last["logratio/rejected"] < -1.0, last
    assert last["logratio/sample"] > 0.0, last
    assert last["loss"] < logs[0]["loss"]


def test_vllm_backend_without_vllm_is_one_line(tiny_model_dir, tokenizer, tmp_path):
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed: this checks the message shown without it")
    except ImportError:
        pass
    with pytest.raises(
        ImportError, match=r"sampling_backend='vllm' needs the optional `vllm` package"
    ) as info:
        d2o_trainer(tiny_model_dir, tokenizer, d2o_args(tmp_path, sampling_backend="vllm"))
    assert "\n" not in str(info.value)
