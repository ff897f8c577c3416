"""Record normalisation: every accepted shape, prompt rendering, and every class of bad input."""

from __future__ import annotations

import logging
import math
import re

import datasets
import pytest

from alignkit.data import (
    ROLE_IDS,
    ROLES,
    PreferenceCollator,
    PreferenceRecord,
    PromptFormat,
    RecordError,
    normalize_record,
    prepare_dataset,
)


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def asst(content: str) -> list[dict]:
    return [msg("assistant", content)]


def decode(tok, ids) -> str:
    return tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


USER = [msg("user", "Recommend a movie.")]
SYSTEM_USER = [msg("system", "Be brief."), msg("user", "Recommend a movie.")]


# --------------------------------------------------------------------------- accepted shapes

SHAPES = {
    # name: (row, prompt, completions, roles, scores, is_qa)
    "pairwise": (
        {"prompt": "Recommend a movie.", "chosen": "A quiet drama.", "rejected": "No."},
        "Recommend a movie.",
        ["A quiet drama.", "No."],
        ["chosen", "rejected"],
        None,
        False,
    ),
    "pairwise_conv": (
        {"prompt": SYSTEM_USER, "chosen": asst("A quiet drama."), "rejected": asst("No.")},
        SYSTEM_USER,
        [asst("A quiet drama."), asst("No.")],
        ["chosen", "rejected"],
        None,
        False,
    ),
    "one_vs_n": (
        {"prompt": "Recommend a movie.", "chosen": "A drama.", "rejected": ["No.", "Never.", "Go away."]},
        "Recommend a movie.",
        ["A drama.", "No.", "Never.", "Go away."],
        ["chosen", "rejected", "rejected", "rejected"],
        None,
        False,
    ),
    "one_vs_n_conv": (
        {"prompt": USER, "chosen": asst("A drama."), "rejected": [asst("No."), asst("Never.")]},
        USER,
        [asst("A drama."), asst("No."), asst("Never.")],
        ["chosen", "rejected", "rejected"],
        None,
        False,
    ),
    "ranked_scores_with_tie": (
        {
            "prompt": "Rate.",
            "completions": ["a drama", "a comedy", "an action film"],
            "scores": [0.5, 2, 0.5],
        },
        "Rate.",
        ["a drama", "a comedy", "an action film"],
        ["ranked", "ranked", "ranked"],
        [0.5, 2.0, 0.5],
        False,
    ),
    "ranked_ranks_with_tie": (
        {"prompt": "Rate.", "completions": ["a", "b", "c", "d"], "ranks": [1, 2, 2, 4]},
        "Rate.",
        ["a", "b", "c", "d"],
        ["ranked"] * 4,
        [1.0, 2.0, 2.0, 4.0],
        False,
    ),
    "ranked_conv": (
        {"prompt": USER, "completions": [asst("x"), asst("y")], "ranks": [2, 1]},
        USER,
        [asst("x"), asst("y")],
        ["ranked", "ranked"],
        [2.0, 1.0],
        False,
    ),
    "negatives_single": (
        {"prompt": "Who wrote it?", "rejected": "The author."},
        "Who wrote it?",
        ["The author."],
        ["rejected"],
        None,
        False,
    ),
    "negatives_list": (
        {"prompt": "Who wrote it?", "rejected": ["The author.", "Someone."]},
        "Who wrote it?",
        ["The author.", "Someone."],
        ["rejected", "rejected"],
        None,
        False,
    ),
    "negatives_conv": (
        {"prompt": USER, "rejected": [asst("x"), asst("y"), asst("z")]},
        USER,
        [asst("x"), asst("y"), asst("z")],
        ["rejected"] * 3,
        None,
        False,
    ),
    "qa": (
        {"question": "Where was the author born?", "answer": "In Paris."},
        "Where was the author born?",
        ["In Paris."],
        ["answer"],
        None,
        True,
    ),
    "qa_tofu_perturbed_extra_fields": (
        {
            "question": "Where was the author born?",
            "answer": "In Paris.",
            "paraphrased_answer": "Paris.",
            "perturbed_answer": ["In Rome.", "In Oslo."],
            "paraphrased_question": "Birthplace?",
        },
        "Where was the author born?",
        ["In Paris."],
        ["answer"],
        None,
        True,
    ),
    "prompt_completion": (
        {"prompt": "The capital of France", "completion": " is Paris."},
        "The capital of France",
        [" is Paris."],
        ["answer"],
        None,
        False,
    ),
    "prompt_completion_label_true": (
        {"prompt": "P", "completion": "good", "label": True},
        "P",
        ["good"],
        ["chosen"],
        None,
        False,
    ),
    "prompt_completion_label_false": (
        {"prompt": "P", "completion": "bad", "label": False},
        "P",
        ["bad"],
        ["rejected"],
        None,
        False,
    ),
    "prompt_completion_conv": (
        {"prompt": USER, "completion": asst("A drama.")},
        USER,
        [asst("A drama.")],
        ["answer"],
        None,
        False,
    ),
    "messages": (
        {
            "messages": [
                *SYSTEM_USER,
                msg("assistant", "A drama."),
                msg("user", "Another?"),
                msg("assistant", "A comedy."),
            ]
        },
        [*SYSTEM_USER, msg("assistant", "A drama."), msg("user", "Another?")],
        [asst("A comedy.")],
        ["answer"],
        None,
        False,
    ),
    "raw_text": (
        {"text": "The author was born in Paris."},
        "",
        ["The author was born in Paris."],
        ["answer"],
        None,
        False,
    ),
    # A dataset column that another row fills is None here (Arrow fills missing keys with None).
    "pairwise_with_null_columns": (
        {
            "prompt": "P",
            "chosen": "c",
            "rejected": "r",
            "completions": None,
            "scores": None,
            "question": None,
        },
        "P",
        ["c", "r"],
        ["chosen", "rejected"],
        None,
        False,
    ),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_normalize_every_shape(name):
    row, prompt, completions, roles, scores, is_qa = SHAPES[name]
    record = normalize_record(row, index=0, source="toy")
    assert isinstance(record, PreferenceRecord)
    assert record.prompt == prompt
    assert record.completions == completions
    assert record.roles == roles
    assert len(record.completions) == len(record.roles)  # K
    assert record.scores == scores
    assert record.is_qa is is_qa
    assert record.conversational is isinstance(prompt, list)
    assert all(role in ROLES for role in record.roles)


def test_ranks_scores_and_labels_are_kept_as_given():
    """The record keeps what the user gave and says what it is; nothing turns ranks into scores."""
    record = normalize_record({"prompt": "p", "completions": ["a", "b", "c"], "ranks": [3, 1, 2]}, index=0)
    assert (record.scores, record.score_kind) == ([3.0, 1.0, 2.0], "ranks")
    record = normalize_record({"prompt": "p", "completions": ["a", "b"], "scores": [-0.5, 2]}, index=0)
    assert (record.scores, record.score_kind) == ([-0.5, 2.0], "scores")
    record = normalize_record({"prompt": "p", "completions": ["a", "b"], "labels": [0.25, 1]}, index=0)
    assert (record.scores, record.score_kind) == ([0.25, 1.0], "labels")
    record = normalize_record({"prompt": "p", "chosen": "a", "rejected": "b"}, index=0)
    assert (record.scores, record.score_kind) == (None, None)


@pytest.mark.parametrize(
    "field,values,problem",
    [
        ("ranks", [0, 1], "ranks[0]`: must be a whole number >= 1"),
        ("ranks", [1, -5], "ranks[1]`: must be a whole number >= 1"),
        ("ranks", [1.5, 1], "ranks[0]`: must be a whole number >= 1"),
        ("labels", [1.2, 0.0], "labels[0]`: must be in [0, 1]"),
        ("labels", [0.5, -0.1], "labels[1]`: must be in [0, 1]"),
    ],
)
def test_bad_ranks_and_labels_name_the_row_and_field(field, values, problem):
    row = {"prompt": "p", "completions": ["a", "b"], field: values}
    with pytest.raises(RecordError) as info:
        normalize_record(row, index=7, source="train.jsonl")
    message = str(info.value)
    assert message.startswith("train.jsonl, row 7, field `") and problem in message, message
    assert "\n" not in message


def test_two_kinds_of_list_values_conflict():
    row = {"prompt": "p", "completions": ["a", "b"], "ranks": [1, 2], "scores": [1.0, 0.0]}
    with pytest.raises(RecordError, match="give one of `scores`, `ranks` or `labels`"):
        normalize_record(row, index=0)


def test_role_ids_index_roles():
    assert [ROLE_IDS[r] for r in ROLES] == list(range(len(ROLES)))
    assert ROLES[:3] == ("chosen", "rejected", "answer")


# --------------------------------------------------------------------------- rendering via the collator


def test_conversational_prompt_renders_via_chat_template(tokenizer):
    collator = PreferenceCollator(tokenizer)
    row = {"prompt": SYSTEM_USER, "chosen": asst("A drama."), "rejected": asst("No.")}
    encoded = collator.encode(row)
    expected_prompt = "<|system|>Be brief.<|end|><|user|>Recommend a movie.<|end|><|assistant|>"
    assert (
        tokenizer.apply_chat_template(SYSTEM_USER, add_generation_prompt=True, tokenize=False)
        == expected_prompt
    )
    assert len(encoded["prompt_ids"]) == 2
    for prompt_ids in encoded["prompt_ids"]:
        assert decode(tokenizer, prompt_ids) == expected_prompt
    assert [decode(tokenizer, c) for c in encoded["completion_ids"]] == [
        "A drama.<|end|></s>",
        "No.<|end|></s>",
    ]
    assert encoded["roles"] == [ROLE_IDS["chosen"], ROLE_IDS["rejected"]]
    assert all(math.isnan(s) for s in encoded["scores"])


def test_messages_row_renders_history_as_prompt(tokenizer):
    collator = PreferenceCollator(tokenizer)
    encoded = collator.encode(SHAPES["messages"][0])
    assert decode(tokenizer, encoded["prompt_ids"][0]) == (
        "<|system|>Be brief.<|end|><|user|>Recommend a movie.<|end|><|assistant|>A drama.<|end|>"
        "<|user|>Another?<|end|><|assistant|>"
    )
    assert decode(tokenizer, encoded["completion_ids"][0]) == "A comedy.<|end|></s>"
    assert encoded["roles"] == [ROLE_IDS["answer"]]


def test_standard_prompt_is_used_verbatim(tokenizer):
    encoded = PreferenceCollator(tokenizer).encode(SHAPES["ranked_ranks_with_tie"][0])
    assert [decode(tokenizer, p) for p in encoded["prompt_ids"]] == ["Rate."] * 4
    assert [decode(tokenizer, c) for c in encoded["completion_ids"]] == ["a</s>", "b</s>", "c</s>", "d</s>"]
    assert encoded["scores"] == [1.0, 2.0, 2.0, 4.0]  # the ranks as given
    assert encoded["roles"] == [ROLE_IDS["ranked"]] * 4


def test_raw_text_has_empty_prompt(tokenizer):
    encoded = PreferenceCollator(tokenizer).encode({"text": "Hello there!"})
    assert encoded["prompt_ids"] == [[]]
    assert decode(tokenizer, encoded["completion_ids"][0]) == "Hello there!</s>"


def test_prompt_format_defaults_follow_the_tokenizer(tokenizer, plain_tokenizer):
    assert PromptFormat.for_tokenizer(tokenizer).mode == "chat"
    assert PromptFormat.for_tokenizer(plain_tokenizer) == PromptFormat.preset("qa_plain")
    assert PreferenceCollator(tokenizer).prompt_format.mode == "chat"
    assert PreferenceCollator(plain_tokenizer).prompt_format.mode == "tags"


def test_qa_uses_chat_format_when_tokenizer_has_template(tokenizer):
    encoded = PreferenceCollator(tokenizer).encode(
        {"question": "Where was the author born?", "answer": "In Paris."}
    )
    assert (
        decode(tokenizer, encoded["prompt_ids"][0])
        == "<|user|>Where was the author born?<|end|><|assistant|>"
    )
    # under a chat template a QA row is a one-turn conversation: the answer ends its assistant turn
    assert decode(tokenizer, encoded["completion_ids"][0]) == "In Paris.<|end|></s>"
    assert encoded["roles"] == [ROLE_IDS["answer"]]
    as_conversation = PreferenceCollator(tokenizer).encode(
        {"prompt": [msg("user", "Where was the author born?")], "completion": asst("In Paris.")}
    )
    assert as_conversation["prompt_ids"] == encoded["prompt_ids"]
    assert as_conversation["completion_ids"] == encoded["completion_ids"]


def test_qa_uses_qa_plain_without_chat_template(plain_tokenizer):
    collator = PreferenceCollator(plain_tokenizer)
    encoded = collator.encode({"question": "Where was the author born?", "answer": "In Paris."})
    assert (
        decode(plain_tokenizer, encoded["prompt_ids"][0]) == "Question: Where was the author born?\nAnswer: "
    )
    assert decode(plain_tokenizer, encoded["completion_ids"][0]) == "In Paris.</s>"


def test_qa_uses_an_explicit_prompt_format(tokenizer):
    collator = PreferenceCollator(tokenizer, prompt_format=PromptFormat.preset("llama2_inst"))
    encoded = collator.encode({"question": "Who?", "answer": "Me."})
    assert decode(tokenizer, encoded["prompt_ids"][0]) == "[INST] Who? [/INST]"
    chat = PreferenceCollator(tokenizer, prompt_format=PromptFormat.preset("chat", system_prompt="Be brief."))
    encoded = chat.encode({"question": "Who?", "answer": "Me."})
    assert (
        decode(tokenizer, encoded["prompt_ids"][0])
        == "<|system|>Be brief.<|end|><|user|>Who?<|end|><|assistant|>"
    )


def test_conversational_record_needs_a_chat_template(plain_tokenizer):
    collator = PreferenceCollator(plain_tokenizer)
    with pytest.raises(ValueError, match="chat template"):
        collator.encode({"prompt": USER, "chosen": asst("a"), "rejected": asst("b")})


def test_non_prefix_preserving_template_is_reported(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # A template that renders the generation prompt differently from the assistant turn.
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    )
    collator = PreferenceCollator(tok)
    with pytest.raises(RecordError, match=r"toy, row 4, field `completions\[0\]`: the chat template"):
        collator.encode({"prompt": USER, "completion": asst("a")}, index=4, source="toy")


# --------------------------------------------------------------------------- bad input

NAN, INF = float("nan"), float("inf")

BAD_ROWS = {
    # name: (row, field, problem regex)
    "missing_prompt": ({"chosen": "a", "rejected": "b"}, "prompt", "is missing"),
    "missing_completion_field": ({"prompt": "p"}, "completions", "no completion field found"),
    "missing_rejected": ({"prompt": "p", "chosen": "a"}, "rejected", "is missing"),
    "missing_scores": ({"prompt": "p", "completions": ["a", "b"]}, "scores", "is missing"),
    "missing_answer": ({"question": "q"}, "answer", "is missing"),
    "missing_question": ({"answer": "a"}, "question", "is missing"),
    "null_answer": ({"question": "q", "answer": None}, "answer", "is missing"),
    "empty_prompt": ({"prompt": "", "chosen": "a", "rejected": "b"}, "prompt", "is empty"),
    "blank_chosen": ({"prompt": "p", "chosen": "  \n", "rejected": "b"}, "chosen", "is empty"),
    "empty_rejected_item": ({"prompt": "p", "rejected": ["a", ""]}, "rejected[1]", "is empty"),
    "empty_answer": ({"question": "q", "answer": " "}, "answer", "is empty"),
    "empty_text": ({"text": ""}, "text", "is empty"),
    "empty_completion": ({"prompt": "p", "completion": ""}, "completion", "is empty"),
    "empty_message_content": (
        {"prompt": [msg("user", "")], "completion": asst("a")},
        "prompt[0].content",
        "is missing or empty",
    ),
    "empty_completions_item": (
        {"prompt": "p", "completions": ["a", " "], "scores": [1, 2]},
        "completions[1]",
        "is empty",
    ),
    "scores_shorter": (
        {"prompt": "p", "completions": ["a", "b", "c"], "scores": [1.0, 2.0]},
        "scores",
        "has 2 entries but there are 3 completions",
    ),
    "scores_longer": (
        {"prompt": "p", "completions": ["a"], "scores": [1.0, 2.0]},
        "scores",
        "has 2 entries but there are 1 completions",
    ),
    "ranks_length": (
        {"prompt": "p", "completions": ["a", "b"], "ranks": [1]},
        "ranks",
        "has 1 entries but there are 2 completions",
    ),
    "scores_nan": (
        {"prompt": "p", "completions": ["a", "b"], "scores": [1.0, NAN]},
        "scores[1]",
        "finite number",
    ),
    "scores_inf": (
        {"prompt": "p", "completions": ["a", "b"], "scores": [INF, 1.0]},
        "scores[0]",
        "finite number",
    ),
    "scores_neg_inf": (
        {"prompt": "p", "completions": ["a", "b"], "scores": [0, -INF]},
        "scores[1]",
        "finite number",
    ),
    "ranks_nan": ({"prompt": "p", "completions": ["a", "b"], "ranks": [NAN, 1]}, "ranks[0]", "finite number"),
    "scores_bool": (
        {"prompt": "p", "completions": ["a", "b"], "scores": [True, 1]},
        "scores[0]",
        "finite number",
    ),
    "scores_string": ({"prompt": "p", "completions": ["a"], "scores": "1"}, "scores", "must be a list"),
    "empty_rejected_list": ({"prompt": "p", "chosen": "a", "rejected": []}, "rejected", "is an empty list"),
    "empty_completions_list": ({"prompt": "p", "completions": [], "scores": []}, "completions", "empty list"),
    "empty_prompt_list": ({"prompt": [], "completion": "a"}, "prompt", "is an empty list"),
    "empty_messages": ({"messages": []}, "messages", "is an empty list"),
    "unknown_role_in_prompt": (
        {"prompt": [msg("human", "hi")], "chosen": asst("a"), "rejected": asst("b")},
        "prompt[0].role",
        "unknown role 'human'",
    ),
    "unknown_role_in_completion": (
        {"prompt": USER, "chosen": [msg("bot", "a")], "rejected": asst("b")},
        "chosen[0].role",
        "unknown role 'bot'",
    ),
    "unknown_role_in_messages": (
        {"messages": [msg("user", "hi"), msg("gpt", "x"), msg("assistant", "a")]},
        "messages[1].role",
        "unknown role 'gpt'",
    ),
    "missing_role": (
        {"messages": [{"content": "hi"}, msg("assistant", "a")]},
        "messages[0].role",
        "unknown role None",
    ),
    "messages_not_ending_with_assistant": (
        {"messages": [msg("user", "hi"), msg("assistant", "a"), msg("user", "and?")]},
        "messages",
        "last message is from the assistant",
    ),
    "messages_only_assistant": ({"messages": [msg("assistant", "a")]}, "messages", "at least one message"),
    "messages_as_string": ({"messages": "hi"}, "messages", "last message is from the assistant"),
    "mixed_conversational_and_plain": (
        {"prompt": USER, "chosen": "plain", "rejected": asst("b")},
        "completions[0]",
        "mixes conversational and plain-text",
    ),
    "mixed_plain_prompt_conv_completion": (
        {"prompt": "p", "completion": asst("a")},
        "completions[0]",
        "mixes conversational",
    ),
    "label_not_bool": ({"prompt": "p", "completion": "c", "label": 1}, "label", "must be a boolean"),
    "completion_wrong_type": ({"prompt": "p", "chosen": 3, "rejected": "b"}, "chosen", "must be a string"),
    "qa_question_as_messages": ({"question": USER, "answer": "a"}, "question", "must be a string"),
    "qa_answer_as_messages": ({"question": "q", "answer": asst("a")}, "answer", "must be a string"),
    "text_as_messages": ({"text": [*USER, msg("assistant", "a")]}, "text", "must be a string"),
}


def error_pattern(source: str, index: int, field: str, problem: str) -> str:
    return re.escape(f"{source}, row {index}, field `{field}`: ") + ".*" + problem


@pytest.mark.parametrize("name", list(BAD_ROWS))
def test_bad_row_names_dataset_row_and_field(name):
    row, field, problem = BAD_ROWS[name]
    with pytest.raises(RecordError, match=error_pattern("my_data", 17, field, problem)) as info:
        normalize_record(row, index=17, source="my_data")
    assert isinstance(info.value, ValueError)
    assert (info.value.source, info.value.index, info.value.field) == ("my_data", 17, field)


@pytest.mark.parametrize(
    "name", ["missing_prompt", "scores_nan", "empty_rejected_list", "unknown_role_in_prompt"]
)
def test_bad_row_through_collator_encode(tokenizer, name):
    row, field, problem = BAD_ROWS[name]
    with pytest.raises(ValueError, match=error_pattern("tofu_forget", 3, field, problem)):
        PreferenceCollator(tokenizer).encode(row, index=3, source="tofu_forget")


def test_raw_batch_row_errors_name_the_batch_position(tokenizer):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    with pytest.raises(RecordError, match=error_pattern("batch", 1, "chosen", "is empty")):
        PreferenceCollator(tokenizer)([good, {"prompt": "p", "chosen": "", "rejected": "b"}])


def test_row_that_is_not_a_mapping():
    with pytest.raises(RecordError, match=error_pattern("d", 2, "<row>", "must be a mapping, got list")):
        normalize_record(["prompt"], index=2, source="d")


def test_prompt_without_room_for_a_completion_token(tokenizer):
    prompt = "The author was born in Paris in 1970 and writes mystery novels."
    n_prompt = len(tokenizer(prompt)["input_ids"])
    assert n_prompt > 5
    row = {"prompt": prompt, "chosen": "a", "rejected": "b"}
    collator = PreferenceCollator(tokenizer, max_length=n_prompt)
    with pytest.raises(
        RecordError, match=error_pattern("long", 9, "prompt", f"has {n_prompt} tokens after truncation")
    ):
        collator.encode(row, index=9, source="long")
    # the same row fits once the prompt is truncated (it keeps its last tokens) or max_length grows
    assert len(PreferenceCollator(tokenizer, max_length=n_prompt + 1).encode(row)["completion_ids"][0]) == 1
    fits = PreferenceCollator(tokenizer, max_length=n_prompt, max_prompt_length=n_prompt - 2).encode(row)
    assert [len(c) for c in fits["completion_ids"]] == [2, 2]


def test_zero_completion_budget_is_an_error(tokenizer):
    collator = PreferenceCollator(tokenizer, max_completion_length=0)
    with pytest.raises(RecordError, match=error_pattern("z", 0, "completions[0]", "no tokens")):
        collator.encode({"prompt": "p", "chosen": "a", "rejected": "b"}, index=0, source="z")


# --------------------------------------------------------------------------- prepare_dataset(on_invalid=...)

RANKED_ROWS = [
    {"prompt": "keep zero", "completions": ["a", "b"], "scores": [1.0, 0.0]},  # 0 ok
    {"prompt": "nan score", "completions": ["a", "b"], "scores": [NAN, 0.0]},  # 1 bad
    {"prompt": "inf score", "completions": ["a", "b"], "scores": [1.0, INF]},  # 2 bad
    {"prompt": "keep three", "completions": ["c", "d"], "scores": [0.5, 0.5]},  # 3 ok
    {"prompt": "wrong length", "completions": ["a", "b"], "scores": [1.0]},  # 4 bad
    {"prompt": " ", "completions": ["a", "b"], "scores": [1.0, 2.0]},  # 5 bad
    {"prompt": "x " * 40, "completions": ["a", "b"], "scores": [1.0, 2.0]},  # 6 bad (no room)
    {"prompt": "keep seven", "completions": ["e", "f"], "scores": [2.0, 1.0]},  # 7 ok
]


def test_prepare_dataset_skip_drops_bad_rows_and_logs_count(tokenizer, caplog):
    collator = PreferenceCollator(tokenizer, max_length=24)
    with caplog.at_level(logging.WARNING, logger="alignkit.data.loading"):
        encoded = prepare_dataset(RANKED_ROWS, collator, name="ranked_toy", on_invalid="skip")
    assert len(encoded) == 3
    assert [decode(tokenizer, row["prompt_ids"][0]) for row in encoded] == [
        "keep zero",
        "keep three",
        "keep seven",
    ]
    assert [[decode(tokenizer, c) for c in row["completion_ids"]] for row in encoded] == [
        ["a</s>", "b</s>"],
        ["c</s>", "d</s>"],
        ["e</s>", "f</s>"],
    ]
    assert [row["scores"] for row in encoded] == [[1.0, 0.0], [0.5, 0.5], [2.0, 1.0]]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ranked_toy: skipped 5 invalid row(s)" in warnings[0]
    assert "first: ranked_toy, row 1, field `scores[0]`" in warnings[0]


def test_prepare_dataset_raise_stops_at_first_bad_row(tokenizer):
    collator = PreferenceCollator(tokenizer, max_length=24)
    with pytest.raises(RecordError, match=error_pattern("ranked_toy", 1, "scores[0]", "finite number")):
        prepare_dataset(RANKED_ROWS, collator, name="ranked_toy")
    # indices count from the start of the data handed in; the first bad row wins
    with pytest.raises(RecordError, match=error_pattern("ranked_toy", 1, "scores", "has 1 entries")):
        prepare_dataset(RANKED_ROWS[3:], collator, name="ranked_toy")


def test_prepare_dataset_raise_reports_the_position_in_the_dataset(tokenizer):
    collator = PreferenceCollator(tokenizer, max_length=24)
    rows = [RANKED_ROWS[0], RANKED_ROWS[3], RANKED_ROWS[6], RANKED_ROWS[1]]
    with pytest.raises(RecordError, match=error_pattern("ranked_toy", 2, "prompt", "leaves no room")):
        prepare_dataset(rows, collator, name="ranked_toy", on_invalid="raise")


def test_prepare_dataset_skip_with_conversational_rows(tokenizer, caplog):
    rows = [
        {"prompt": USER, "chosen": asst("yes"), "rejected": asst("no")},
        {"prompt": [msg("human", "hi")], "chosen": asst("yes"), "rejected": asst("no")},
        {"prompt": USER, "chosen": asst("ok"), "rejected": asst("")},
        {"prompt": SYSTEM_USER[1:], "chosen": asst("sure"), "rejected": asst("never")},
    ]
    dataset = datasets.Dataset.from_list(rows)
    collator = PreferenceCollator(tokenizer)
    with caplog.at_level(logging.WARNING, logger="alignkit.data.loading"):
        encoded = prepare_dataset(dataset, collator, name="chat_prefs", on_invalid="skip")
    assert len(encoded) == 2
    assert [decode(tokenizer, row["completion_ids"][0]) for row in encoded] == [
        "yes<|end|></s>",
        "sure<|end|></s>",
    ]
    assert "chat_prefs: skipped 2 invalid row(s)" in caplog.text
    assert "chat_prefs, row 1, field `prompt[0].role`: unknown role 'human'" in caplog.text
    with pytest.raises(RecordError, match=error_pattern("chat_prefs", 1, "prompt[0].role", "unknown role")):
        prepare_dataset(dataset, collator, name="chat_prefs")


def test_prepare_dataset_skip_mode_with_missing_and_empty_fields(tokenizer, caplog):
    rows = [
        {"question": "Where?", "answer": "Paris."},
        {"question": "Where?", "answer": None},
        {"question": "", "answer": "Paris."},
        {"question": "When?", "answer": "In 1970."},
    ]
    with caplog.at_level(logging.WARNING, logger="alignkit.data.loading"):
        encoded = prepare_dataset(rows, PreferenceCollator(tokenizer), name="qa", on_invalid="skip")
    assert [decode(tokenizer, row["completion_ids"][0]) for row in encoded] == [
        "Paris.<|end|></s>",
        "In 1970.<|end|></s>",
    ]
    assert "qa: skipped 2 invalid row(s)" in caplog.text
    assert "first: qa, row 1, field `answer`: is missing" in caplog.text


def test_prepare_dataset_clean_data_logs_nothing(tokenizer, caplog):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3
    with caplog.at_level(logging.WARNING, logger="alignkit.data.loading"):
        encoded = prepare_dataset(rows, PreferenceCollator(tokenizer), name="clean", on_invalid="skip")
    assert len(encoded) == 3
    assert "skipped" not in caplog.text
    assert set(encoded.column_names) == {"prompt_ids", "completion_ids", "roles", "scores"}


def test_prepare_dataset_rejects_bad_mode_empty_data_and_all_invalid(tokenizer):
    collator = PreferenceCollator(tokenizer)
    with pytest.raises(ValueError, match="`on_invalid` must be 'raise' or 'skip', got 'ignore'"):
        prepare_dataset([{"text": "a"}], collator, on_invalid="ignore")
    with pytest.raises(ValueError, match="nothing is empty"):
        prepare_dataset(datasets.Dataset.from_list([]), collator, name="nothing")
    bad = [{"prompt": "", "chosen": "a", "rejected": "b"}] * 2
    with pytest.raises(
        ValueError, match=r"allbad: every row was invalid \(2 skipped\); first: allbad, row 0"
    ):
        prepare_dataset(bad, collator, name="allbad", on_invalid="skip")


def test_prepare_dataset_keeps_fields_that_only_later_rows_have(tokenizer):
    rows = [
        {"prompt": "p", "rejected": "r"},  # negatives only: no `chosen`
        {"prompt": "q", "chosen": "c", "rejected": "s"},  # pairwise: its `chosen` must survive
        {"question": "Where?", "answer": "Paris."},
    ]
    encoded = prepare_dataset(rows, PreferenceCollator(tokenizer), name="mixed")
    assert [row["roles"] for row in encoded] == [
        [ROLE_IDS["rejected"]],
        [ROLE_IDS["chosen"], ROLE_IDS["rejected"]],
        [ROLE_IDS["answer"]],
    ]
    assert [decode(tokenizer, c) for c in encoded[1]["completion_ids"]] == ["c</s>", "s</s>"]
