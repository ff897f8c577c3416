"""Reading datasets (Hub id, local folder or file, ``synthetic:...``) and encoding them once."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
from torch.utils.data import Dataset as TorchDataset

from alignkit.data.collator import PreferenceCollator
from alignkit.data.records import PreferenceRecord, RecordError

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
        return datasets.load_dataset("json", data_files=str(path), split="train")
    if path.is_dir():
        if config is None:
            raise ValueError(f"{path} is a folder: name the file to read with `config` (e.g. 'forget10').")
        for suffix in (".json", ".jsonl"):
            candidate = path / f"{config}{suffix}"
            if candidate.is_file():
                return datasets.load_dataset("json", data_files=str(candidate), split="train")
        raise FileNotFoundError(f"{path} has no {config}.json or {config}.jsonl")
    if str(source).startswith(("/", "./", "../")):
        raise FileNotFoundError(f"{source} does not exist")
    return datasets.load_dataset(str(source), config, split=split)


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
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"`on_invalid` must be 'raise' or 'skip', got {on_invalid!r}")
    if isinstance(data, datasets.Dataset):
        rows = data
    else:
        # Not `Dataset.from_list`: it takes the columns from the first row only, which would silently
        # drop fields of later rows (a `chosen` lost turns a pairwise row into a negatives-only one).
        data = list(data)
        columns = list(dict.fromkeys(key for row in data for key in row))
        rows = datasets.Dataset.from_dict({key: [row.get(key) for row in data] for key in columns})
    if len(rows) == 0:
        raise ValueError(f"{name} is empty")
    skipped: list[str] = []

    def encode_batch(batch: dict, indices: list[int]) -> dict:
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "roles": [], "scores": []}
        keys = list(batch)
        for j, index in enumerate(indices):
            row = {k: batch[k][j] for k in keys}
            try:
                encoded = collator.encode(
                    transform(row, index) if transform else row, index=index, source=name
                )
            except RecordError as error:
                if on_invalid == "raise":
                    raise
                skipped.append(str(error))
                continue
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
