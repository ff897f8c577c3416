"""The MUSE evaluation sets: read from a Hub dataset or a local muse_bench folder, and checked.

Spec: ``shared/design/benchmarks.md`` §3. MUSE-News (BBC News articles, ``muse-bench/MUSE-News``) and
MUSE-Books (the Harry Potter books, ``muse-bench/MUSE-Books``; GitHub ``data/books/``) share one layout
and schema, so one reader serves both; see each dataset card for terms of use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.errors import MissingFileError

DEFAULT_DATA = "muse-bench/MUSE-News"


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

# name -> (HF subset, HF split, local files tried in order, required fields; None = a plain string)
_SPLITS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...] | None]] = {
    "knowmem_forget": ("knowmem", "forget_qa", ("knowmem/forget_qa.json",), ("question", "answer")),
    "knowmem_forget_icl": (
        "knowmem",
        "forget_qa_icl",
        ("knowmem/forget_qa_icl.json",),
        ("question", "answer"),
    ),
    # HF calls the retain QA files retain_qa(_icl); the GitHub snapshot calls them retain2_qa(_icl).
    "knowmem_retain": (
        "knowmem",
        "retain_qa",
        ("knowmem/retain_qa.json", "knowmem/retain2_qa.json"),
        ("question", "answer"),
    ),
    "knowmem_retain_icl": (
        "knowmem",
        "retain_qa_icl",
        ("knowmem/retain_qa_icl.json", "knowmem/retain2_qa_icl.json"),
        ("question", "answer"),
    ),
    "verbmem_forget": ("verbmem", "forget", ("verbmem/forget.json",), ("prompt", "gt")),
    "privleak_forget": ("privleak", "forget", ("privleak/forget.json",), None),
    "privleak_holdout": ("privleak", "holdout", ("privleak/holdout.json",), None),
}
_FEWSHOT_SPLITS = ("knowmem_forget_icl", "knowmem_retain_icl")


@dataclass
class MuseData:
    """The MUSE evaluation sets, read and checked; ``sources`` says where each came from."""

    knowmem_forget: list[dict]
    knowmem_forget_icl: list[dict]
    knowmem_retain: list[dict]
    knowmem_retain_icl: list[dict]
    verbmem_forget: list[dict]
    privleak_forget: list[str]
    privleak_holdout: list[str]
    sources: dict[str, str] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in _SPLITS}


def _read_json_rows(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        # JSON Lines (one object per line) is accepted too.
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON nor JSON Lines ({err}).") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON array of rows, got a {type(rows).__name__}.")
    return rows


def _check_rows(rows: list, fields: tuple[str, ...] | None, where: str) -> list:
    """Validate rows; ``fields=None`` means plain strings (a ``{"text": ...}`` row is unwrapped)."""
    if not rows:
        raise ValueError(f"{where}: no rows.")
    out = []
    for i, row in enumerate(rows):
        if fields is None:
            if isinstance(row, dict) and "text" in row:
                row = row["text"]
            if not isinstance(row, str):
                raise ValueError(
                    f"{where} row {i}: expected a string (or an object with a 'text' field), got {type(row).__name__}."
                )
            out.append(row)
            continue
        if not isinstance(row, dict):
            raise ValueError(
                f"{where} row {i}: expected an object with fields {list(fields)}, got {type(row).__name__}."
            )
        for name in fields:
            if name not in row:
                raise ValueError(f"{where} row {i}: missing field {name!r} (has {sorted(row)}).")
            if not isinstance(row[name], str):
                raise ValueError(
                    f"{where} row {i}: field {name!r} must be a string, got {type(row[name]).__name__}."
                )
        out.append({name: row[name] for name in fields})
    return out


def _load_local(root: Path, candidates: tuple[str, ...]) -> tuple[list, str]:
    for rel in candidates:
        path = root / rel
        if path.is_file():
            return _read_json_rows(path), str(path)
    tried = ", ".join(str(root / rel) for rel in candidates)
    raise MissingFileError(
        f"MUSE data folder {root} lacks a required file; tried: {tried}. The folder must follow the "
        "muse_bench layout (knowmem/forget_qa.json, knowmem/forget_qa_icl.json, knowmem/retain_qa.json or "
        "retain2_qa.json and their _icl files, verbmem/forget.json, privleak/forget.json, privleak/holdout.json)."
    )


def _load_hub(repo_id: str, subset: str, split: str) -> tuple[list, str]:
    try:
        from datasets import load_dataset

        ds = load_dataset(repo_id, subset, split=split)
    except Exception as err:  # the datasets library raises many types (offline, missing config, ...)
        raise MissingFileError(
            f"Could not load MUSE split {subset}/{split} of the Hugging Face dataset {repo_id!r}: "
            f"{type(err).__name__}: {err}. Pass a local folder in the muse_bench layout instead "
            "(`data=` / `--data`), or allow Hub access."
        ) from err
    return ds.to_list(), f"hf://{repo_id}/{subset}/{split}"


def _first_items(ds: MuseData, n: int) -> MuseData:
    if n < 1:
        raise ValueError(f"`max_examples` must be >= 1 or None, got {n}.")
    kept = {name: getattr(ds, name) if name in _FEWSHOT_SPLITS else getattr(ds, name)[:n] for name in _SPLITS}
    return MuseData(**kept, sources=ds.sources)


def load_muse_data(data: str | Path = DEFAULT_DATA, *, max_examples: int | None = None) -> MuseData:
    """Read the MUSE eval sets from a local folder (GitHub ``data/bbc/`` layout) or a Hub dataset id.

    Both sources go through the same row checks. ``max_examples`` keeps the first N rows of each
    evaluated set (never of the few-shot sets, which are the prompt).
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"`max_examples` must be >= 1 or None, got {max_examples}.")
    root = Path(data)
    local = root.is_dir()
    if not local and (root.exists() or str(data).startswith((".", "/", "~"))):
        raise MissingFileError(
            f"MUSE data {data!r} is not a folder. Pass a folder in the muse_bench layout or a Hub id."
        )
    values: dict[str, list] = {}
    sources: dict[str, str] = {}
    for name, (subset, split, files, fields) in _SPLITS.items():
        rows, source = _load_local(root, files) if local else _load_hub(str(data), subset, split)
        rows = _check_rows(rows, fields, source)
        if max_examples is not None and name not in _FEWSHOT_SPLITS:
            rows = rows[:max_examples]
        values[name], sources[name] = rows, source
    return MuseData(**values, sources=sources)
