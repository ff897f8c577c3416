"""Replaying a given forget/retain pairing file: the trainer sees exactly the pairs, in file order."""

from __future__ import annotations

import json
import random

import pytest
from trainer_helpers import FORGET, RETAIN, train_args
from transformers import AutoModelForCausalLM

from alignkit import get_method
from alignkit.data import load_pairs


def _answers(batch, tokenizer, rows: slice) -> list[str]:
    """The scored text of each row (its completion tokens), decoded."""
    out = []
    for ids, mask in zip(batch["input_ids"][rows], batch["completion_mask"][rows]):
        out.append(tokenizer.decode(ids[mask.bool()], skip_special_tokens=True).strip())
    return out


def test_pairing_file_replays_batches_in_order(unlearn_model_dir, unlearn_tokenizer, tmp_path):
    # A pairing another framework drew: forget rows in a shuffled order, retain rows chosen per pair.
    rng = random.Random(7)
    order = rng.sample(range(len(FORGET)), len(FORGET))
    pairs = [[FORGET[i], RETAIN[rng.randrange(len(RETAIN))]] for i in order]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(pairs))

    forget, retain = load_pairs(path)
    spec = get_method("npo")
    args = train_args(
        spec,
        tmp_path / "run",
        max_steps=8,  # two epochs of 4 batches: the pairing must hold in every epoch
        per_device_train_batch_size=2,
        retain_loss="nll",
        retain_pairing="aligned",
        train_sampling_strategy="sequential",
    )

    seen: list[tuple[list[str], list[str]]] = []

    class Recording(spec.trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            n = inputs["num_main"]
            seen.append(
                (
                    _answers(inputs, self.processing_class, slice(0, n)),
                    _answers(inputs, self.processing_class, slice(n, None)),
                )
            )
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer = Recording(
        AutoModelForCausalLM.from_pretrained(unlearn_model_dir),
        args=args,
        train_dataset=forget,
        retain_dataset=retain,
        processing_class=unlearn_tokenizer,
    )
    trainer.train()

    expected = [
        ([f["answer"] for f, _ in pairs[b : b + 2]], [r["answer"] for _, r in pairs[b : b + 2]])
        for b in range(0, len(pairs), 2)
    ]
    assert seen == expected * 2


def test_aligned_pairing_needs_as_many_retain_rows(unlearn_model_dir, unlearn_tokenizer, tmp_path):
    spec = get_method("npo")
    args = train_args(spec, tmp_path / "run", retain_loss="nll", retain_pairing="aligned")
    with pytest.raises(ValueError, match=r"8 forget and 3 retain rows"):
        spec.trainer_cls(
            str(unlearn_model_dir),
            args=args,
            train_dataset=FORGET,
            retain_dataset=RETAIN[:3],
            processing_class=unlearn_tokenizer,
        )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[{}, {}], [{}]]", r"pairs\.json: pair 1 is not \[forget_row, retain_row\]"),
        ('{"a": 1}', r"pairs\.json: expected a non-empty JSON list"),
        ("[[{}, {}],", r"pairs\.json: not valid JSON"),
    ],
)
def test_malformed_pairing_file_is_named(content, message, tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_pairs(path)
