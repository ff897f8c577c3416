"""A step whose loss or gradient is not finite stops training loudly (or, opted in, is skipped).

The fault is injected into the model, not into the guard: a forward hook that turns the token
embeddings into NaN during one chosen step, or a gradient hook that does the same to their gradient.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from trainer_helpers import FORGET, RETAIN, snapshot, train_args
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from alignkit import get_method
from alignkit.errors import TrainingDiverged

BAD_STEP = 3


class Fault(TrainerCallback):
    """Poisons step ``BAD_STEP`` (1-based optimizer step) and records the weights after each step."""

    def __init__(self, model, where: str, persistent: bool = False):
        self.active = False
        self.persistent = persistent  # every step from BAD_STEP on, not BAD_STEP alone
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        embed = model.get_input_embeddings()
        if where == "loss":
            embed.register_forward_hook(lambda m, i, out: out * math.nan if self.active else out)
        elif where == "retain":  # batches of 2 forget rows (one completion each), then 2 retain rows
            embed.register_forward_hook(
                lambda m, i, out: torch.cat([out[:2], out[2:] * math.nan]) if self.active else out
            )
        else:
            embed.weight.register_hook(lambda g: g * math.nan if self.active else g)

    def on_step_begin(self, args, state, control, **kwargs):
        step = state.global_step + 1
        self.active = step == BAD_STEP or (self.persistent and step > BAD_STEP)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights[state.global_step] = snapshot(model)


def make_trainer(tiny_model_dir, tmp_path, method: str, **overrides):
    spec = get_method(method)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    fault = Fault(model, overrides.pop("fault"), overrides.pop("persistent", False))
    args = train_args(spec, tmp_path / "run", per_device_train_batch_size=2, **overrides)
    retain = RETAIN if getattr(args, "retain_loss", "none") != "none" else None
    trainer = spec.trainer_cls(
        model,
        args,
        train_dataset=FORGET,
        retain_dataset=retain,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        callbacks=[fault],
    )
    return trainer, fault


def test_nan_loss_stops_at_the_step_naming_term_and_rows_after_a_checkpoint(tiny_model_dir, tmp_path):
    trainer, fault = make_trainer(tiny_model_dir, tmp_path, "ga", fault="loss")
    with pytest.raises(TrainingDiverged) as info:
        trainer.train()
    checkpoint = tmp_path / "run" / f"checkpoint-{BAD_STEP - 1}"
    # shuffled batches of 2: the rows of step 3 are whichever the sampler drew; the message names them
    match = re.fullmatch(
        rf"step {BAD_STEP}: the ga loss is nan on rows \[(\d+), (\d+)\] of train_dataset\. Training "
        rf"stopped; the weights from before this step are saved in {re.escape(str(checkpoint))}\. Lower "
        r"`learning_rate` or set `max_grad_norm` and resume with --resume_from_checkpoint "
        rf"{re.escape(str(checkpoint))}, or set `on_nonfinite: skip` to skip such steps\.",
        str(info.value),
    )
    assert match, str(info.value)
    assert len({int(match[1]), int(match[2])} & set(range(len(FORGET)))) == 2
    assert trainer.state.global_step == BAD_STEP - 1
    # The checkpoint holds the weights after step 2, all finite, and the model was not stepped.
    saved = AutoModelForCausalLM.from_pretrained(checkpoint)
    for name, value in saved.named_parameters():
        assert torch.isfinite(value).all(), name
        torch.testing.assert_close(value, fault.weights[BAD_STEP - 1][name], rtol=0, atol=0)
    for name, value in trainer.model.named_parameters():
        torch.testing.assert_close(value.detach(), fault.weights[BAD_STEP - 1][name], rtol=0, atol=0)
    assert (checkpoint / "optimizer.pt").is_file()  # resumable


def test_nan_retain_term_is_named(tiny_model_dir, tmp_path):
    trainer, _ = make_trainer(tiny_model_dir, tmp_path, "npo_rt", fault="retain")
    with pytest.raises(
        TrainingDiverged, match=rf"^step {BAD_STEP}: the retain loss \(nll\) is nan on rows \["
    ):
        trainer.train()


def test_nan_gradient_with_finite_loss_stops_naming_the_parameter(tiny_model_dir, tmp_path):
    trainer, _ = make_trainer(tiny_model_dir, tmp_path, "ga", fault="gradient")
    with pytest.raises(TrainingDiverged) as info:
        trainer.train()
    assert str(info.value).startswith(
        f"step {BAD_STEP}: the gradient of `model.embed_tokens.weight` is not finite (the loss was finite). "
        "Training stopped;"
    )


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_skip_mode_leaves_the_weights_of_that_step_unchanged_and_counts_it(tiny_model_dir, tmp_path, where):
    trainer, fault = make_trainer(tiny_model_dir, tmp_path, "ga", fault=where, on_nonfinite="skip")
    trainer.train()
    assert trainer.state.global_step == 5
    before, skipped, after = (fault.weights[s] for s in (BAD_STEP - 1, BAD_STEP, BAD_STEP + 1))
    for name in before:
        torch.testing.assert_close(skipped[name], before[name], rtol=0, atol=0)
        assert torch.isfinite(after[name]).all()
    assert any(not torch.equal(after[n], skipped[n]) for n in after)  # later steps still train
    logged = [e.get("nonfinite_skipped_steps", 0) for e in trainer.state.log_history if "loss" in e]
    assert logged == [0, 0, 1, 1, 1]


def test_skip_mode_stops_once_too_many_steps_were_skipped(tiny_model_dir, tmp_path):
    """A run that skips step after step is diverging: past nonfinite_skip_limit (0.1 of at least 10
    steps) it stops like `stop` does, instead of ending "done" with the weights of step 2."""
    trainer, _ = make_trainer(
        tiny_model_dir, tmp_path, "ga", fault="loss", persistent=True, on_nonfinite="skip", max_steps=8
    )
    with pytest.raises(TrainingDiverged) as info:
        trainer.train()
    assert str(info.value).startswith(f"step {BAD_STEP + 1}: the ga loss is nan on rows [")
    assert (
        f"2 of {BAD_STEP + 1} optimizer steps were skipped, more than nonfinite_skip_limit=0.1 of them"
        in str(info.value)
    )
    assert (tmp_path / "run" / f"checkpoint-{BAD_STEP}").is_dir()


def test_on_nonfinite_is_validated(tmp_path):
    with pytest.raises(ValueError, match="`on_nonfinite` must be 'stop' or 'skip', got 'ignore'"):
        get_method("ga").make_config(output_dir=str(tmp_path), on_nonfinite="ignore")
