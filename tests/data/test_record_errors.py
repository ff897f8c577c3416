"""Rows whose meaning is ambiguous are errors naming the fields; nothing is reinterpreted silently."""

from __future__ import annotations

import logging
import re

import pytest

from alignkit.data import ROLE_IDS, PreferenceCollator, RecordError, normalize_record, prepare_dataset


def asst(content) -> list[dict]:
    return [{"role": "assistant", "content": content}]


USER = [{"role": "user", "content": "Recommend a movie."}]

AMBIGUOUS = {
    # name: (row, exact message after "data, row 3, field ")
    "misspelled_chosen": (
        {"prompt": "p", "choosen": "good", "rejected": "bad"},
        "`choosen`: is not a known field; did you mean `chosen`? Rename it",
    ),
    "misspelled_rejected": (
        {"prompt": "p", "chosen": "good", "rejectd": "bad"},
        "`rejectd`: is not a known field; did you mean `rejected`? Rename it",
    ),
    "pairwise_and_ranked": (
        {"prompt": "p", "chosen": "a", "rejected": "b", "completions": ["c", "d"], "scores": [1, 2]},
        "`chosen/rejected/completions/scores`: the row has `chosen`/`rejected` and `completions`/`scores`, "
        "which belong to different record shapes; keep the fields of one shape "
        "(e.g. `dataset.remove_columns([...])`)",
    ),
    "qa_and_pairwise": (
        {"question": "q", "answer": "a", "prompt": "p", "chosen": "c", "rejected": "r"},
        "`question/answer/chosen/rejected`: the row has `question`/`answer` and `chosen`/`rejected`, "
        "which belong to different record shapes; keep the fields of one shape "
        "(e.g. `dataset.remove_columns([...])`)",
    ),
    "qa_and_prompt": (
        {"question": "q", "answer": "a", "prompt": "p"},
        "`question/answer/prompt`: the row has `question`/`answer` and `prompt`, which belong to "
        "different record shapes; keep the fields of one shape (e.g. `dataset.remove_columns([...])`)",
    ),
    "text_and_completion": (
        {"text": "t", "completion": "c"},
        "`text/completion`: the row has `text` and `completion`, which belong to different record "
        "shapes; keep the fields of one shape (e.g. `dataset.remove_columns([...])`)",
    ),
    "messages_and_pairwise": (
        {"messages": [*USER, *asst("a")], "prompt": USER, "chosen": asst("a"), "rejected": asst("b")},
        "`messages/chosen/rejected`: the row has `messages` and `chosen`/`rejected`, which belong to "
        "different record shapes; keep the fields of one shape (e.g. `dataset.remove_columns([...])`)",
    ),
    "scores_and_ranks": (
        {"prompt": "p", "completions": ["a", "b"], "scores": [1, 2], "ranks": [2, 1]},
        "`ranks`: conflicts with `scores`: give one of `scores`, `ranks` or `labels`",
    ),
    "scores_without_completions": (
        {"prompt": "p", "chosen": "a", "rejected": "b", "scores": [1, 2]},
        "`chosen/rejected/scores`: the row has `chosen`/`rejected` and `scores`, which belong to "
        "different record shapes; keep the fields of one shape (e.g. `dataset.remove_columns([...])`)",
    ),
    "label_without_completion": (
        {"prompt": "p", "chosen": "a", "rejected": "b", "label": True},
        "`chosen/rejected/label`: the row has `chosen`/`rejected` and `label`, which belong to "
        "different record shapes; keep the fields of one shape (e.g. `dataset.remove_columns([...])`)",
    ),
    "int_message_content": (
        {"prompt": [{"role": "user", "content": 5}], "completion": asst("a")},
        "`prompt[0].content`: must be a string, got int 5",
    ),
    "missing_message_content": (
        {"prompt": [{"role": "user"}], "completion": asst("a")},
        "`prompt[0].content`: is missing",
    ),
    "non_string_field_name": ({"prompt": "p", "completion": "c", 7: "x"}, "`7`: field names must be strings"),
}


@pytest.mark.parametrize("name", list(AMBIGUOUS))
def test_ambiguous_or_misspelled_rows_are_errors_naming_the_fields(name):
    row, message = AMBIGUOUS[name]
    with pytest.raises(RecordError) as info:
        normalize_record(row, index=3, source="data")
    assert str(info.value) == f"data, row 3, field {message}"


def test_unambiguous_neighbours_still_load():
    # The fields each ambiguous row above mixes are each fine alone.
    assert normalize_record({"prompt": "p", "chosen": "a", "rejected": "b"}, index=0).roles == [
        "chosen",
        "rejected",
    ]
    assert normalize_record({"prompt": "p", "rejected": "b"}, index=0).roles == ["rejected"]
    assert normalize_record({"question": "q", "answer": "a"}, index=0).is_qa
    assert normalize_record({"text": "t"}, index=0).completions == ["t"]
    assert normalize_record({"prompt": "p", "completion": "c", "label": False}, index=0).roles == ["rejected"]
    # A field close to a known one that the row also has is an extra, not a typo.
    assert normalize_record({"prompt": "p", "prompt_id": "x1", "completion": "c"}, index=0).roles == [
        "answer"
    ]


def test_unknown_fields_are_warned_once_per_dataset(tokenizer, caplog):
    rows = [
        {"prompt": f"p{i}", "chosen": "a", "rejected": "b", "source": "web", "annotator": i} for i in range(5)
    ]
    with caplog.at_level(logging.WARNING, logger="alignkit.data.loading"):
        encoded = prepare_dataset(rows, PreferenceCollator(tokenizer), name="prefs")
    assert len(encoded) == 5
    warnings = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert warnings == [
        "prefs: ignoring field(s) `annotator`, `source`, which no record shape reads (see alignkit.data.records)."
    ]


def test_a_misspelled_field_is_an_error_and_not_also_ignored(tokenizer, caplog):
    """`choosen` is an error naming the row; the warning "ignoring field(s) `choosen`" printed just
    before it said the opposite."""
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "choosen": "a", "rejected": "b"}]
    with caplog.at_level(logging.WARNING, logger="alignkit.data.loading"), pytest.raises(RecordError):
        prepare_dataset(rows, PreferenceCollator(tokenizer), name="prefs")
    assert [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()] == []


def test_collator_rejects_an_empty_batch(tokenizer):
    with pytest.raises(ValueError, match=re.escape("PreferenceCollator got an empty batch (no rows)")):
        PreferenceCollator(tokenizer)([])


# Python-API rows whose field types vary from row to row: `Dataset.from_dict` crashed in pyarrow.
VARYING = [
    {"prompt": "p0", "rejected": "only one"},
    {"prompt": "p1", "rejected": ["first", "second"]},
    {"question": "Year?", "answer": 1970},
    {"question": "Where?", "answer": "Paris."},
]


def test_python_rows_with_varying_types_raise_a_record_error(tokenizer):
    with pytest.raises(RecordError) as info:
        prepare_dataset(VARYING, PreferenceCollator(tokenizer), name="api_rows")
    assert (
        str(info.value)
        == "api_rows, row 2, field `answer`: must be a string or a list of role/content messages, got int"
    )


def test_python_rows_with_varying_types_honour_skip(tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="alignkit.data.loading"):
        encoded = prepare_dataset(VARYING, PreferenceCollator(tokenizer), name="api_rows", on_invalid="skip")
    assert encoded["row_index"] == [0, 1, 3]
    assert encoded["roles"] == [
        [ROLE_IDS["rejected"]],
        [ROLE_IDS["rejected"], ROLE_IDS["rejected"]],
        [ROLE_IDS["answer"]],
    ]
    assert "api_rows: skipped 1 invalid row(s)" in caplog.text
    assert (
        "api_rows, row 2, field `answer`: must be a string or a list of role/content messages, got int"
        in caplog.text
    )
