"""TRL's implicit-prompt form (``chosen``/``rejected`` as whole dialogues, no ``prompt``) is accepted
without a preset and split exactly as TRL's ``DPOTrainer`` splits it."""

from __future__ import annotations

import json

import pytest
from trl.data_utils import maybe_extract_prompt

from alignkit.data.records import RecordError, normalize_record
from tests.conftest import shared_dir


def _hh_rows() -> list[dict]:
    path = shared_dir("preference_samples") / "hh-rlhf" / "harmless-base" / "test.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_real_hh_rows_split_as_trl_splits_them():
    rows = _hh_rows()
    assert len(rows) == 30
    for i, row in enumerate(rows):
        record = normalize_record(row, index=i, source="hh")
        trl = maybe_extract_prompt(dict(row))
        assert record.prompt == trl["prompt"]
        assert record.completions == [trl["chosen"], trl["rejected"]]
        assert record.roles == ["chosen", "rejected"]
        # the prompt is the dialogue up to the final assistant turn, which both rows continue
        assert record.prompt.startswith("\n\nHuman: ")
        assert row["chosen"] == record.prompt + record.completions[0]


def test_conversational_rows_split_by_whole_messages():
    user = {"role": "user", "content": "What color is the sky?"}
    row = {
        "chosen": [user, {"role": "assistant", "content": "It is blue."}],
        "rejected": [user, {"role": "assistant", "content": "It is green."}],
    }
    record = normalize_record(row, index=0)
    assert record.prompt == [user]
    assert record.completions == [[row["chosen"][1]], [row["rejected"][1]]]
    assert record.conversational


def test_string_prompt_with_conversational_dialogues_is_reextracted_as_trl_does():
    # ultrafeedback_binarized publishes `prompt` as a string beside conversational chosen/rejected
    user = {"role": "user", "content": "Name a colour."}
    row = {
        "prompt": "Name a colour.",
        "chosen": [user, {"role": "assistant", "content": "Blue."}],
        "rejected": [user, {"role": "assistant", "content": "Seven."}],
    }
    record = normalize_record(row, index=0)
    assert record.prompt == maybe_extract_prompt(dict(row))["prompt"] == [user]


def test_explicit_prompt_of_the_same_form_is_kept():
    row = {"prompt": "Q: 2+2? A:", "chosen": " 4", "rejected": " 5"}
    record = normalize_record(row, index=0)
    assert record.prompt == "Q: 2+2? A:"
    assert record.completions == [" 4", " 5"]


@pytest.mark.parametrize(
    "row, field, words",
    [
        ({"chosen": "same dialogue", "rejected": "same dialogue"}, "rejected", "identical"),
        ({"chosen": "Alpha answer", "rejected": "Beta answer"}, "prompt", "share no prefix"),
        ({"chosen": "Hello there", "rejected": "Hello there, friend"}, "chosen", "is a prefix of the other"),
        ({"chosen": [{"role": "user", "content": "x"}], "rejected": "x y"}, "rejected", "mixes"),
    ],
)
def test_implicit_rows_that_cannot_be_split_name_the_field(row, field, words):
    with pytest.raises(RecordError) as info:
        normalize_record(row, index=3, source="pairs.jsonl")
    assert info.value.field == field
    assert "pairs.jsonl, row 3" in str(info.value)
    assert words in str(info.value)


def test_one_vs_n_rows_without_a_prompt_are_still_refused():
    with pytest.raises(RecordError, match="`prompt`: is missing"):
        normalize_record({"chosen": "a", "rejected": ["b", "c"]}, index=0)


def test_implicit_rows_encode_with_the_extracted_prompt(tokenizer):
    from alignkit.data.collator import PreferenceCollator

    user = {"role": "user", "content": "Where was the author born?"}
    row = {
        "chosen": [user, {"role": "assistant", "content": "In Paris."}],
        "rejected": [user, {"role": "assistant", "content": "I don't know."}],
    }
    explicit = {"prompt": [user], "chosen": row["chosen"][1:], "rejected": row["rejected"][1:]}
    collator = PreferenceCollator(tokenizer)
    implicit_ids, explicit_ids = collator.encode(row), collator.encode(explicit)
    assert implicit_ids["prompt_ids"] == explicit_ids["prompt_ids"]
    assert implicit_ids["completion_ids"] == explicit_ids["completion_ids"]
