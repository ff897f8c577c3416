"""Reading datasets (Hub id, local folder or file, ``synthetic:...``) and encoding them once."""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch.utils.data import Dataset as TorchDataset

from alignkit.data.collator import PreferenceCollator
from alignkit.data.records import PreferenceRecord, RecordError, unknown_fields
from alignkit.errors import DataFileError, MissingFileError

if TYPE_CHECKING:
    import datasets

# `datasets` is imported where it is used: its import (pandas, pyarrow) takes ~0.8 s, which an
# evaluation that reads one local JSON file per split pays for nothing (see `load_row_dicts`).

logger = logging.getLogger(__name__)

PAIRINGS = ("random", "aligned")


def load_rows(source: str | Path, config: str | None = None, split: str = "train") -> datasets.Dataset:
    """Load raw rows from a JSON/JSONL file, a local folder holding ``<config>.json``, or a Hub id.

    Local folders mirror Hub datasets whose configs are single JSON files (TOFU:
    ``load_rows("locuslab/TOFU", "forget10")`` and ``load_rows("/data/tofu", "forget10")`` read the
    same rows), so one code path serves both after reading.
    """
    path = Path(source)
    if path.is_file():
        return load_json_file(path)
    if path.is_dir():
        if config is None:
            raise ValueError(f"{path} is a folder: name the file to read with `config` (e.g. 'forget10').")
        if "+" in config:
            return join_configs(path, config.split("+"))
        file = config_file(path, config)
        if file is None:
            raise MissingFileError(f"{path} has no {config}.json or {config}.jsonl")
        return load_json_file(file)
    if str(source).startswith(("/", "./", "../")):
        raise MissingFileError(f"{source} does not exist")
    import datasets

    return datasets.load_dataset(str(source), config, split=split)


def config_file(folder: Path, config: str) -> Path | None:
    """The file a local dataset folder holds for ``config``: ``<config>.json``, else ``<config>.jsonl``."""
    return next((f for suffix in (".json", ".jsonl") if (f := folder / f"{config}{suffix}").is_file()), None)


def join_configs(folder: Path, configs: list[str]) -> datasets.Dataset:
    """``config="full+real_authors"``: the rows of several files of a folder, one after the other.

    Only the fields every file has are kept (the general-facts files add option columns the
    question/answer rows lack); what is dropped is logged.
    """
    parts = [load_rows(folder, name) for name in configs]
    common = [c for c in parts[0].column_names if all(c in p.column_names for p in parts)]
    dropped = sorted({c for p in parts for c in p.column_names} - set(common))
    if dropped:
        logger.info("%s: joining %s keeps the shared fields %s; dropped %s", folder, configs, common, dropped)
    import datasets

    return datasets.concatenate_datasets([p.select_columns(common) for p in parts])


def load_row_dicts(source: str | Path, config: str | None = None, split: str = "train") -> list[dict]:
    """``load_rows(source, config, split).to_list()``; a local JSON list or JSON Lines file is read
    without ``datasets`` (its import and Arrow conversion cost more than reading the file).

    The rows are those ``datasets`` gives: each has every field any row of the file has, in order of
    first appearance, ``None`` where a row lacks it. Values are as the JSON holds them (``datasets``
    would also unify a field's type across rows, e.g. ints to floats where some rows hold floats).
    """
    path = Path(source)
    if path.is_dir() and config is not None and "+" not in config:
        path = config_file(path, config) or path
    rows = check_json_file(path) if path.is_file() else None
    if rows is None:
        return load_rows(source, config, split).to_list()
    fields = list(dict.fromkeys(name for row in rows for name in row))
    return [{name: row.get(name) for name in fields} for row in rows]


def load_json_file(path: Path) -> datasets.Dataset:
    """A local JSON/JSONL file as rows, after ``check_json_file`` (errors name the file and line)."""
    import datasets

    check_json_file(path)
    try:
        return datasets.load_dataset("json", data_files=str(path), split="train")
    except (ValueError, TypeError, datasets.exceptions.DatasetGenerationError) as err:
        # What the line-by-line check does not foresee still names the file, not a parser frame.
        cause = err.__cause__ or err
        raise DataFileError(f"{path}: could not be read as rows ({type(cause).__name__}: {cause}).") from err


def check_json_file(path: Path) -> list[dict] | None:
    """Raise ``DataFileError`` naming the file, the line and the fix for a file that is not rows.

    Returns the rows it parsed (a JSON list of objects, or JSON Lines), or None for a file holding
    one JSON object (one row or a mapping of columns), which only ``datasets`` reads.

    ``datasets``' JSON reader reports these as a bare ``StopIteration`` (empty file), "corresponds to
    no data" (whitespace), a pyarrow parse error without the file's line, or a ``UnicodeDecodeError``
    without the file; one pass over the bytes here says which line is wrong instead.
    """
    raw = path.read_bytes()
    fix = "a dataset file holds one JSON object per line (JSONL) or a JSON list of objects"
    if not raw:
        raise DataFileError(f"{path} is empty (0 bytes); {fix}.")
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataFileError(
                f"{path}, line {number}: byte 0x{line[err.start]:02x} at column {err.start + 1} is not "
                "valid UTF-8; re-save the file as UTF-8."
            ) from None
    text = raw.decode("utf-8-sig")
    if not text.strip():
        raise DataFileError(f"{path} holds only whitespace, no rows; {fix}.")
    document = None
    if text.lstrip().startswith("["):  # a JSON list of rows: one document, its own line numbers
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise _json_error(path, err.lineno, err, fix) from None
        if not isinstance(document, list) or not document:
            raise DataFileError(f"{path} holds an empty JSON list, no rows; {fix}.")
        for row, value in enumerate(document):
            _check_object(value, f"{path}, row {row}", fix)
        return document
    with contextlib.suppress(json.JSONDecodeError):  # not one document: JSON Lines, checked below
        document = json.loads(text)
    if isinstance(document, dict):
        return None  # one row, or a mapping of columns: `datasets` reads both
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            if line.strip("\r"):  # `datasets` reads an empty line but fails on one holding spaces
                raise DataFileError(f"{path}, line {number}: holds only whitespace; delete the line.")
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise _json_error(path, number, err, fix) from None
        _check_object(value, f"{path}, line {number}", fix)
        rows.append(value)
    return rows


def _json_error(path: Path, line: int, err: json.JSONDecodeError, fix: str) -> DataFileError:
    return DataFileError(f"{path}, line {line}: not valid JSON ({err.msg} at column {err.colno}); {fix}.")


def _check_object(value, where: str, fix: str) -> None:
    if not isinstance(value, dict):
        raise DataFileError(
            f"{where}: is a JSON {type(value).__name__}, not an object of fields "
            f'(e.g. {{"prompt": ..., "chosen": ..., "rejected": ...}}); {fix}.'
        )


def prepare_dataset(
    data: datasets.Dataset | Sequence[dict],
    collator: PreferenceCollator,
    *,
    name: str = "dataset",
    on_invalid: str = "raise",
    transform: Callable[[dict, int], dict | PreferenceRecord] | None = None,
) -> datasets.Dataset:
    """Normalise and tokenise every row once; returns a dataset of encoded features.

    ``on_invalid="raise"`` (default) stops at the first malformed row with a message naming
    ``name``, the row and the field. ``"skip"`` drops such rows and logs how many (and which
    first), so nothing disappears silently. ``transform(row, index)`` may rewrite a row (or return a
    ``PreferenceRecord``) before encoding, e.g. to add IdkDPO's "I don't know" completion.
    """
    import datasets

    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"`on_invalid` must be 'raise' or 'skip', got {on_invalid!r}")
    if isinstance(data, datasets.Dataset):
        rows, python_rows = data, None
        fields = data.column_names
    else:
        # Python rows never become an Arrow table as they are: `Dataset.from_list` takes the columns
        # from the first row only (a `chosen` lost turns a pairwise row into a negatives-only one),
        # and a field whose type varies between rows (a string `rejected` here, a list there; an int
        # answer) crashes pyarrow. The map below reads each row from the list by index instead, so
        # every row goes through the same checks (and `on_invalid`) as a file's rows.
        python_rows = list(data)
        rows = datasets.Dataset.from_dict({"_row": list(range(len(python_rows)))})
        fields = list(dict.fromkeys(k for row in python_rows if isinstance(row, dict) for k in row))
    if len(rows) == 0:
        raise ValueError(f"{name} is empty")
    ignored = unknown_fields(f for f in fields if isinstance(f, str))
    if ignored:
        logger.warning(
            "%s: ignoring field(s) %s, which no record shape reads (see alignkit.data.records).",
            name,
            ", ".join(f"`{f}`" for f in ignored),
        )
    if "chosen" in fields and "rejected" in fields and "prompt" not in fields:
        logger.info(
            "%s: no `prompt` field: each row's prompt is the shared prefix of `chosen` and `rejected` "
            "(TRL's implicit-prompt form, split by trl.data_utils.extract_prompt).",
            name,
        )
    skipped: list[str] = []

    def encode_batch(batch: dict, indices: list[int]) -> dict:
        out: dict[str, list] = {
            "prompt_ids": [],
            "completion_ids": [],
            "roles": [],
            "scores": [],
            "row_index": [],
        }
        keys = list(batch)
        for j, index in enumerate(indices):
            row = python_rows[index] if python_rows is not None else {k: batch[k][j] for k in keys}
            try:
                encoded = collator.encode(
                    transform(row, index) if transform else row, index=index, source=name
                )
            except RecordError as error:
                if on_invalid == "raise":
                    raise
                skipped.append(str(error))
                continue
            encoded["row_index"] = index  # the input row, named when a batch's loss is not finite
            for k in out:
                out[k].append(encoded[k])
        return out

    # A fresh in-memory map (no cache files): encoded rows depend on the tokenizer and the
    # truncation settings, which the fingerprint of a python closure does not capture reliably.
    encoded = rows.map(
        encode_batch,
        with_indices=True,
        batched=True,
        remove_columns=rows.column_names,
        load_from_cache_file=False,
        keep_in_memory=True,
        desc=f"Tokenizing {name}",
    )
    if skipped:
        logger.warning(
            "%s: skipped %d invalid row(s) (on_invalid='skip'); first: %s", name, len(skipped), skipped[0]
        )
    if len(encoded) == 0:
        raise ValueError(f"{name}: every row was invalid ({len(skipped)} skipped); first: {skipped[0]}")
    return encoded


class ForgetRetainDataset(TorchDataset):
    """Forget rows, each paired with a retain row.

    ``pairing="random"`` (default): the retain row of forget index ``i`` in epoch ``e`` comes from
    ``Random(f"{seed}-{e}-{i}")``, independently of the forget order, so a run resumed from a checkpoint
    draws exactly the pairs the uninterrupted run would have drawn. ``pairing="aligned"``: forget row
    ``i`` goes with retain row ``i`` in every epoch (a given pairing, e.g. from :func:`load_pairs`).
    """

    def __init__(
        self, forget: datasets.Dataset, retain: datasets.Dataset, seed: int = 0, pairing: str = "random"
    ):
        if len(retain) == 0:
            raise ValueError("The retain dataset is empty")
        if pairing not in PAIRINGS:
            raise ValueError(f"`pairing` must be one of {PAIRINGS}, got {pairing!r}")
        if pairing == "aligned" and len(retain) != len(forget):
            raise ValueError(
                f"retain_pairing='aligned' pairs forget row i with retain row i, but there are {len(forget)} "
                f"forget and {len(retain)} retain rows; give as many of each, or use retain_pairing='random'."
            )
        self.forget, self.retain, self.seed, self.pairing, self.epoch = forget, retain, seed, pairing, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.forget)

    def retain_index(self, index: int) -> int:
        if self.pairing == "aligned":
            return index
        return random.Random(f"{self.seed}-{self.epoch}-{index}").randrange(len(self.retain))

    def __getitem__(self, index: int) -> dict:
        item = dict(self.forget[index])
        retain = self.retain[self.retain_index(index)]
        item["retain_prompt_ids"] = retain["prompt_ids"]
        item["retain_completion_ids"] = retain["completion_ids"]
        return item


def load_pairs(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Read a pairing file ``[[forget_row, retain_row], ...]`` (JSON) into forget rows and retain rows.

    Train on the given pairs in the given order with ``retain_pairing="aligned"`` (pair ``i`` stays
    together) and ``train_sampling_strategy="sequential"`` (pair ``i`` is the ``i``-th example seen), so
    batch ``b`` holds pairs ``b*B ... b*B+B-1``: the way to replay batches another framework drew.
    """
    path = Path(path)
    try:
        pairs = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: pairing file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg}, line {err.lineno}); expected [[forget_row, retain_row], ...]"
        ) from None
    if not isinstance(pairs, list) or not pairs:
        raise ValueError(f"{path}: expected a non-empty JSON list [[forget_row, retain_row], ...]")
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(row, dict) for row in pair)):
            raise ValueError(
                f"{path}: pair {i} is not [forget_row, retain_row] (two JSON objects); got {type(pair).__name__}"
                + (f" of length {len(pair)}" if isinstance(pair, list) else "")
            )
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]
