"""The real TOFU files (../shared/data/tofu) through the record layer: load, normalise, encode, collate."""

from __future__ import annotations

import logging
import math
import statistics

import pytest
import torch

from alignkit.data import (
    ROLE_IDS,
    ForgetRetainDataset,
    PreferenceCollator,
    load_rows,
    normalize_record,
    prepare_dataset,
)
from alignkit.models import train_tokenizer

PERTURBED_COLUMNS = {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question"}


@pytest.fixture(scope="module")
def tofu(tofu_dir):
    return {name: load_rows(tofu_dir, name) for name in ("forget10", "forget10_perturbed", "retain90")}


@pytest.fixture(scope="module")
def tofu_tokenizer(tofu):
    """A byte-level BPE trained on a sample of TOFU text, so token lengths are realistic."""
    sample = tofu["retain90"].select(range(0, 3600, 6))
    return train_tokenizer([*sample["question"], *sample["answer"]], vocab_size=2048)


@pytest.fixture(scope="module")
def encoded(tofu, tofu_tokenizer):
    collator = PreferenceCollator(tofu_tokenizer)
    return collator, {name: prepare_dataset(rows, collator, name=name) for name, rows in tofu.items()}


def decode(tok, ids) -> str:
    return tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_load_rows_reads_the_tofu_configs(tofu):
    assert len(tofu["forget10"]) == 400
    assert len(tofu["retain90"]) == 3600
    assert len(tofu["forget10_perturbed"]) == 400
    assert set(tofu["forget10"].column_names) == {"question", "answer"}
    assert set(tofu["retain90"].column_names) == {"question", "answer"}
    assert set(tofu["forget10_perturbed"].column_names) == PERTURBED_COLUMNS
    assert (
        tofu["forget10"][0]["answer"] == "The author's full name is Hsiao Yun-Hwa."
    )  # `\/` escapes parsed as JSON
    assert "05/11/1991" in tofu["forget10"][0]["question"]
    assert not set(tofu["forget10"]["question"]) & set(tofu["retain90"]["question"])


def test_load_rows_errors(tofu_dir, tmp_path):
    with pytest.raises(ValueError, match="is a folder: name the file to read with `config`"):
        load_rows(tofu_dir)
    with pytest.raises(FileNotFoundError, match="has no forget99.json or forget99.jsonl"):
        load_rows(tofu_dir, "forget99")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rows(tmp_path / "missing")


def test_every_tofu_row_normalises_as_qa(tofu):
    for name, rows in tofu.items():
        for i, row in enumerate(rows):
            record = normalize_record(row, index=i, source=name)
            assert record.is_qa and record.roles == ["answer"] and record.scores is None
            assert record.prompt == row["question"] and record.completions == [row["answer"]]


def test_forget_and_retain_encode_without_errors(encoded, tofu, caplog):
    collator, data = encoded
    tok = collator.tokenizer
    assert {name: len(ds) for name, ds in data.items()} == {
        "forget10": 400,
        "forget10_perturbed": 400,
        "retain90": 3600,
    }
    # skip mode finds nothing to skip either
    with caplog.at_level(logging.WARNING, logger="alignkit.data.loading"):
        assert len(prepare_dataset(tofu["forget10"], collator, name="forget10", on_invalid="skip")) == 400
    assert "skipped" not in caplog.text
    for name in ("forget10", "retain90"):
        ds = data[name]
        assert all(row == [ROLE_IDS["answer"]] for row in ds["roles"])
        assert all(len(s) == 1 and math.isnan(s[0]) for s in ds["scores"])
        assert all(len(c) == 1 and c[0][-1] == tok.eos_token_id for c in ds["completion_ids"])


def test_forget_rows_render_and_decode_exactly(encoded, tofu):
    collator, data = encoded
    tok = collator.tokenizer
    for row, enc in zip(tofu["forget10"], data["forget10"]):
        assert decode(tok, enc["prompt_ids"][0]) == f"<|user|>{row['question']}<|end|><|assistant|>"
        assert decode(tok, enc["completion_ids"][0]) == row["answer"] + "<|end|></s>"


def test_realistic_token_lengths(encoded):
    collator, data = encoded
    answers = [len(c[0]) for c in data["retain90"]["completion_ids"]]
    prompts = [len(p[0]) for p in data["retain90"]["prompt_ids"]]
    assert 15 <= statistics.median(answers) <= 80
    assert 10 <= statistics.median(prompts) <= 60
    assert max(a + p for a, p in zip(answers, prompts)) < 512  # fits the tiny model's positions


def test_perturbed_rows_normalise_as_qa_on_question_and_answer(encoded):
    _, data = encoded
    assert data["forget10_perturbed"]["prompt_ids"] == data["forget10"]["prompt_ids"]
    assert data["forget10_perturbed"]["completion_ids"] == data["forget10"]["completion_ids"]


def test_qa_plain_format_on_tofu(tofu, tofu_tokenizer):
    from copy import deepcopy

    plain = deepcopy(tofu_tokenizer)
    plain.chat_template = None
    rows = tofu["forget10"].select(range(5))
    ds = prepare_dataset(rows, PreferenceCollator(plain), name="forget10")
    for row, enc in zip(rows, ds):
        assert decode(plain, enc["prompt_ids"][0]) == f"Question: {row['question']}\nAnswer: "


def test_forget_retain_batch_on_tofu(encoded):
    collator, data = encoded
    dataset = ForgetRetainDataset(data["forget10"], data["retain90"], seed=0)
    assert len(dataset) == 400
    batch = collator([dataset[i] for i in range(8)])
    assert batch["num_main"] == 8
    assert batch["input_ids"].shape[0] == 16
    assert batch["group_sizes"].tolist() == [1] * 8
    tok = collator.tokenizer
    retain_answers = {decode(tok, c[0]) for c in data["retain90"]["completion_ids"]}
    forget_answers = [decode(tok, c[0]) for c in data["forget10"].select(range(8))["completion_ids"]]
    texts = [decode(tok, row[m.bool()]) for row, m in zip(batch["input_ids"], batch["completion_mask"])]
    assert texts[:8] == forget_answers
    assert all(t in retain_answers for t in texts[8:])
    assert ((batch["completion_mask"] == 1) & (batch["attention_mask"] == 0)).sum() == 0
    assert torch.all(batch["completion_mask"].sum(1) > 0)


def test_truncated_tofu_encoding_respects_max_length(tofu, tofu_tokenizer):
    collator = PreferenceCollator(tofu_tokenizer, max_prompt_length=24, max_length=48)
    ds = prepare_dataset(tofu["forget10"], collator, name="forget10")
    assert len(ds) == 400
    lengths = [len(p[0]) + len(c[0]) for p, c in zip(ds["prompt_ids"], ds["completion_ids"])]
    assert max(lengths) == 48
    assert all(len(p[0]) <= 24 for p in ds["prompt_ids"])


def test_rows_read_without_datasets_equal_datasets_rows(tofu_dir, tmp_path):
    """`load_row_dicts` (the evaluators' reader, no `datasets` import) gives `load_rows(...).to_list()`:
    on every TOFU file, and on JSON Lines whose rows lack fields (filled with None, in first-seen order)."""
    from alignkit.data.loading import load_row_dicts

    for path in sorted(tofu_dir.glob("*.json")):
        assert load_row_dicts(tofu_dir, path.stem) == load_rows(tofu_dir, path.stem).to_list(), path.name
    ragged = tmp_path / "ragged.jsonl"
    ragged.write_text('{"b": "x", "a": [1, 2]}\n{"c": "y"}\n\n{"a": [3], "b": null}\n')
    assert load_row_dicts(ragged) == load_rows(ragged).to_list()
    assert list(load_row_dicts(ragged)[1]) == ["b", "a", "c"]
