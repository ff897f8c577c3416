"""Fuzzing the data path: adversarial rows and files at the loading layer, the record layer and the collator.

Every input must be either accepted correctly or rejected with an alignkit error naming the file /
row / field; no other exception, and no accepted row whose fields were partly ignored or whose
completion mask does not cover exactly its completion tokens.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignkit.data import ROLES, PreferenceCollator, RecordError, load_rows, normalize_record, prepare_dataset
from alignkit.data.records import KNOWN_FIELDS, SHAPE_FIELDS
from alignkit.errors import DataFileError

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True, scope="module")
def _quiet():
    import datasets

    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


# Text that stresses tokenisers and checks: unicode of every category, blanks, long strings.
TEXT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["", " ", "\n\t", "\u200b", "é", "日本語", "🙂" * 3, "<|end|>", "a" * 3000]),
)
SCALAR = st.one_of(
    TEXT,
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
)
MESSAGE = st.dictionaries(
    st.sampled_from(["role", "content", "name"]),
    st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "human", ""]), SCALAR),
    max_size=3,
)
VALUE = st.one_of(
    SCALAR,
    st.lists(SCALAR, max_size=4),
    st.lists(MESSAGE, max_size=3),
    st.lists(st.lists(MESSAGE, min_size=1, max_size=2), max_size=3),
)
FIELD = st.one_of(
    st.sampled_from(sorted(KNOWN_FIELDS)),
    st.sampled_from(["choosen", "rejectd", "id", "meta"]),
    st.text(max_size=6),
)
ROW = st.dictionaries(FIELD, VALUE, max_size=5)

# Rows that are valid or close to valid, so that acceptance is exercised as much as rejection.
NEAR_VALID = st.one_of(
    st.fixed_dictionaries(
        {"prompt": TEXT, "chosen": TEXT, "rejected": st.one_of(TEXT, st.lists(TEXT, max_size=3))}
    ),
    st.fixed_dictionaries({"question": TEXT, "answer": st.one_of(TEXT, st.integers())}),
    st.fixed_dictionaries(
        {"prompt": TEXT, "completions": st.lists(TEXT, max_size=3), "scores": st.lists(SCALAR, max_size=3)}
    ),
    st.fixed_dictionaries({"text": TEXT}, optional={"completion": TEXT}),
    st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": TEXT})
            )
        }
    ),
    st.fixed_dictionaries({"prompt": TEXT, "completion": TEXT}, optional={"label": SCALAR}),
)
ANY_ROW = st.one_of(ROW, NEAR_VALID)
FIELD_NAME = re.compile(r"^(?P<field>[^\[.]+)")


def shape_of(row: dict) -> set[str]:
    keys = {k for k, v in row.items() if v is not None}
    return {shape for shape, fields in SHAPE_FIELDS.items() if keys & set(fields)}


def check_record_error(error: RecordError, row, index: int, source: str) -> None:
    message = str(error)
    assert message.startswith(f"{source}, row {index}, field `"), message
    assert "\n" not in message
    top = FIELD_NAME.match(error.field)["field"]
    parts = set(top.split("/"))
    named = {str(k) for k in row} | KNOWN_FIELDS | {"<row>", *(repr(k) for k in row)}
    assert parts <= named, (error.field, row)


def check_record(record, row: dict) -> None:
    """An accepted row: well-formed, and every known field it has was used (one shape only)."""
    assert record.completions and len(record.roles) == len(record.completions)
    assert set(record.roles) <= set(ROLES)
    if record.scores is not None:
        assert len(record.scores) == len(record.completions) and all(math.isfinite(s) for s in record.scores)
    assert len(shape_of(row)) == 1, row
    if "chosen" in row and row["chosen"] is not None:
        assert record.roles.count("chosen") == 1
    if "rejected" in row and row["rejected"] is not None:
        rejected = row["rejected"]
        n = len(rejected) if isinstance(rejected, list) and not isinstance(rejected[0], dict) else 1
        assert record.roles.count("rejected") == n


def check_masks(batch: dict, encoded: list[dict]) -> None:
    """The completion mask covers exactly each row's completion tokens, right after its prompt."""
    rows = [(p, c) for e in encoded for p, c in zip(e["prompt_ids"], e["completion_ids"])]
    assert batch["completion_mask"].shape[0] >= len(rows)
    for i, (p, c) in enumerate(rows):
        ids = torch.tensor(p + c)
        n = len(ids)
        assert c, "an accepted completion has no tokens"
        assert torch.equal(batch["input_ids"][i, :n], ids)
        assert batch["attention_mask"][i].sum() == n and batch["attention_mask"][i, :n].all()
        expected = torch.zeros_like(batch["completion_mask"][i])
        expected[len(p) : n] = 1
        assert torch.equal(batch["completion_mask"][i], expected)
    assert batch["group_sizes"].tolist() == [len(e["completion_ids"]) for e in encoded]


@FUZZ
@given(row=st.one_of(ANY_ROW, SCALAR, st.lists(SCALAR, max_size=2)), index=st.integers(0, 10**6))
def test_record_layer_accepts_correctly_or_names_row_and_field(row, index):
    try:
        record = normalize_record(row, index=index, source="fuzz.jsonl")
    except RecordError as error:
        check_record_error(error, row if isinstance(row, dict) else {}, index, "fuzz.jsonl")
        return
    check_record(record, row)


@FUZZ
@given(rows=st.lists(ANY_ROW, min_size=1, max_size=6), max_length=st.sampled_from([None, 8, 64]))
def test_mixed_rows_through_dataset_and_collator(tokenizer, rows, max_length):
    """A dataset mixing every shape: skip keeps exactly the acceptable rows, with correct masks."""
    collator = PreferenceCollator(
        tokenizer, max_length=max_length, max_prompt_length=4 if max_length else None
    )
    acceptable = []
    for i, row in enumerate(rows):
        try:
            acceptable.append((i, collator.encode(row, index=i, source="fuzz")))
        except RecordError as error:
            check_record_error(error, row, i, "fuzz")
    try:
        encoded = prepare_dataset(rows, collator, name="fuzz", on_invalid="skip")
    except ValueError as error:  # every row invalid: says so, naming the first
        assert not acceptable and str(error).startswith("fuzz: every row was invalid"), error
        return
    assert encoded["row_index"] == [i for i, _ in acceptable]
    features = [dict(e) for e in encoded]
    assert [f["completion_ids"] for f in features] == [e["completion_ids"] for _, e in acceptable]
    check_masks(collator(features), features)


LINE_FAULTS = st.sampled_from(["truncate", "non_utf8", "bare_string", "number", "blank"])


@settings(FUZZ, max_examples=30)  # each example reads a file through `datasets`
@given(
    rows=st.lists(NEAR_VALID, min_size=1, max_size=5),
    fault=st.one_of(st.none(), st.tuples(st.integers(0, 4), LINE_FAULTS)),
    jsonl=st.booleans(),
)
def test_loading_layer_reads_rows_or_names_file_and_line(tokenizer, rows, fault, jsonl):
    lines = [json.dumps(row, ensure_ascii=False).encode("utf-8") for row in rows]
    bad_line = None
    if fault is not None:
        at, kind = fault
        at %= len(lines)
        lines[at] = {
            "truncate": lines[at][: max(1, len(lines[at]) // 2)],
            "non_utf8": lines[at][:1] + b"\xff" + lines[at][1:],
            "bare_string": b'"a string"',
            "number": b"42",
            "blank": b"   ",
        }[kind]
        # A line of spaces is named in JSONL (`datasets` fails on it) and breaks a JSON list.
        bad_line = at + 1
        if kind == "blank" and jsonl and sum(1 for line in lines if line.strip()) == 1:
            bad_line = None  # spaces around a single object: one JSON document, read as one row
    content = b"\n".join(lines) + b"\n" if jsonl else b"[" + b",\n".join(lines) + b"]"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("data.jsonl" if jsonl else "data.json")
        path.write_bytes(content)
        try:
            loaded = load_rows(path)
        except DataFileError as error:
            message = str(error)
            if not any(line.strip() for line in lines) or (not jsonl and len(lines) == 1 and bad_line):
                # nothing but blanks, or a JSON list whose only row is broken: "no rows" / its line
                assert message.startswith(str(path)), message
                return
            assert bad_line is not None, message
            assert message.startswith(f"{path}, ") and "\n" not in message, message
            # JSONL names the line; a broken JSON list names the line where the document breaks (a
            # truncated element may only break it on the next line); a non-object names its row.
            lines_ok = f"{bad_line}" if jsonl else f"{bad_line}|{bad_line + 1}"
            where = rf"{re.escape(str(path))}, (line ({lines_ok})|row {bad_line - 1}):"
            assert re.match(where, message), message
            return
        assert bad_line is None, (fault, content)
        try:
            prepare_dataset(loaded, PreferenceCollator(tokenizer), name=str(path))
        except RecordError as error:
            check_record_error(error, loaded[error.index], error.index, str(path))
