"""A run stopped at a checkpoint and resumed ends exactly where the uninterrupted run ends.

torchtune / TRL style: train 4 steps straight; train the same run to step 2 (checkpoint at 2, then
stop), resume it in a new trainer from ``resume_from_checkpoint=True``; parameters, the logged
history and the batches (forget rows and the retain rows paired with them) must match. 6 forget rows
at batch 2 give 3 steps per epoch, so the resume lands mid-epoch and step 4 opens epoch 1, where
the forget/retain pairing is drawn afresh.

Before resuming, a ``checkpoint-4`` as a save killed midway leaves it (weights, no completion marker)
is planted in the run folder: resume must skip it, say so in one log line, and the resumed run's own
save of step 4 must replace it whole.
"""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from trainer_helpers import FORGET, RETAIN, StopAt, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.trainers.checkpoints import MARKER

COMPARED = (
    "loss",
    "grad_norm",
    "learning_rate",
    "loss/method",
    "retain/nll",
    "logps/answer",
    "logratio/answer",
)


class RecordingCollator:
    """Wraps the trainer's collator and keeps every batch it builds (main and retain rows)."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, features):
        batch = self.collator(features)
        self.batches.append(batch["input_ids"].tolist())
        return batch


def make_trainer(model_dir, tokenizer, output_dir, callbacks=None):
    spec = get_method("npo_rt")
    args = train_args(
        spec,
        output_dir,
        max_steps=4,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        save_strategy="steps",
        save_steps=2,
    )
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=FORGET[:6],
        retain_dataset=RETAIN,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.data_collator = RecordingCollator(trainer.data_collator)
    return trainer


def steps(history):
    return {log["step"]: log for log in history if "loss" in log}


def test_resume_matches_uninterrupted_run(unlearn_model_dir, unlearn_tokenizer, tmp_path, caplog):
    straight = make_trainer(unlearn_model_dir, unlearn_tokenizer, tmp_path / "straight")
    straight.train()

    first = make_trainer(unlearn_model_dir, unlearn_tokenizer, tmp_path / "resumed", callbacks=[StopAt(2)])
    first.train()
    assert first.state.global_step == 2
    assert (tmp_path / "resumed" / "checkpoint-2").is_dir()
    assert not (tmp_path / "resumed" / "checkpoint-4").exists()

    assert (tmp_path / "resumed" / "checkpoint-2" / MARKER).is_file()
    partial = tmp_path / "resumed" / "checkpoint-4"
    partial.mkdir()
    shutil.copy(tmp_path / "resumed" / "checkpoint-2" / "model.safetensors", partial)
    (partial / "optimizer.pt").write_bytes(b"\x80\x02 cut short")

    second = make_trainer(unlearn_model_dir, unlearn_tokenizer, tmp_path / "resumed")
    with caplog.at_level(logging.WARNING, logger="alignkit.trainers.base"):
        second.train(resume_from_checkpoint=True)
    resumed_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Resuming")]
    assert resumed_lines == [
        f"Resuming from {tmp_path / 'resumed' / 'checkpoint-2'}, the newest complete checkpoint; "
        "skipped checkpoint-4 (a save that did not finish)."
    ]
    assert (partial / MARKER).is_file()  # the resumed run saved step 4 afresh
    assert (partial / "optimizer.pt").stat().st_size > 1000
    assert second.state.global_step == 4
    # Both ended in epoch 1, whose pairing the epoch callback asked for.
    assert straight.train_dataset.epoch == second.train_dataset.epoch == 1

    # Parameters.
    reference = dict(straight.model.named_parameters())
    for name, p in second.model.named_parameters():
        torch.testing.assert_close(p, reference[name], atol=1e-6, rtol=0, msg=f"parameter {name}")

    # Logged history, step by step (steps 1-2 come from the checkpoint's trainer_state.json).
    expected, got = steps(straight.state.log_history), steps(second.state.log_history)
    assert sorted(got) == sorted(expected) == [1, 2, 3, 4]
    for step in expected:
        for key in COMPARED:
            assert got[step][key] == pytest.approx(expected[step][key], abs=1e-5), (step, key)

    # Batches, forget rows and their retain partners: the first run built steps 1-2, the resumed
    # one steps 3-4 (a data loader may build one batch ahead, so compare prefixes).
    batches = straight.data_collator.batches
    assert first.data_collator.batches[:2] == batches[:2]
    assert second.data_collator.batches[:2] == batches[2:4]
