"""Data files that are not rows: one error naming the file and line, never a bare parser exception."""

from __future__ import annotations

import pytest

from alignkit.data import load_rows
from alignkit.errors import DataFileError, UserError

FIX = "a dataset file holds one JSON object per line (JSONL) or a JSON list of objects"
GOOD = b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n'

BAD_FILES = {
    # name: (file name, bytes, message after the path)
    "zero_bytes": ("data.jsonl", b"", f" is empty (0 bytes); {FIX}."),
    "whitespace_only": ("data.jsonl", b"  \n\n\t\n", f" holds only whitespace, no rows; {FIX}."),
    "malformed_line": (
        "data.jsonl",
        GOOD + GOOD + b'{"prompt": "p", "chosen":\n',
        f", line 3: not valid JSON (Expecting value at column 26); {FIX}.",
    ),
    "non_utf8": (
        "data.jsonl",
        GOOD + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',
        ", line 2: byte 0xe9 at column 16 is not valid UTF-8; re-save the file as UTF-8.",
    ),
    "line_of_spaces": (
        "data.jsonl",
        GOOD + b"   \n" + GOOD,
        ", line 2: holds only whitespace; delete the line.",
    ),
    "bare_strings": (
        "data.jsonl",
        b'"first"\n"second"\n',
        ', line 1: is a JSON str, not an object of fields (e.g. {"prompt": ..., "chosen": ..., '
        f'"rejected": ...}}); {FIX}.',
    ),
    "json_list_of_numbers": (
        "data.json",
        b'[{"text": "a"}, 5]',
        ', row 1: is a JSON int, not an object of fields (e.g. {"prompt": ..., "chosen": ..., '
        f'"rejected": ...}}); {FIX}.',
    ),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_data_file_is_one_error_naming_file_and_line(tmp_path, name):
    file_name, content, message = BAD_FILES[name]
    path = tmp_path / file_name
    path.write_bytes(content)
    with pytest.raises(DataFileError) as info:
        load_rows(path)
    assert str(info.value) == f"{path}{message}"
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


def test_bad_file_in_a_config_folder_is_named(tmp_path):
    (tmp_path / "forget10.json").write_bytes(b"")
    with pytest.raises(DataFileError, match="forget10.json is empty"):
        load_rows(tmp_path, "forget10")


@pytest.mark.parametrize(
    "content",
    [
        GOOD * 3,
        b"\xef\xbb\xbf" + GOOD,  # UTF-8 byte-order mark
        b'[{"prompt": "p", "chosen": "a", "rejected": "b"}]',
        b'{"prompt": "p", "chosen": "a", "rejected": "b"}',  # one object, no newline
        GOOD + b"\n\n" + GOOD,  # blank lines between rows
    ],
)
def test_well_formed_files_still_load(tmp_path, content):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    rows = load_rows(path)
    assert rows[0] == {"prompt": "p", "chosen": "a", "rejected": "b"}
