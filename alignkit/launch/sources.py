"""Where a recipe's data and model come from: Hub ids, local paths, and ``synthetic:`` sources.

A source is a string:

* a Hub id (``locuslab/TOFU``) with a config (``forget10``) and a split;
* a local JSON/JSONL file, or a folder holding ``<config>.json`` (a local copy of a Hub dataset
  whose configs are single files, e.g. the TOFU files);
* ``synthetic:NAME?key=value&...``: data generated offline by alignkit, written to a file-backed
  cache (``$ALIGNKIT_CACHE/synthetic``) so every process of a multi-process launch reads the same
  files (trl-notes P6). Names: ``tofu`` (the generated TOFU-format benchmark; ``split=forget10`` or
  the dataset's ``config`` picks the file; ``forget_percents=5,10,15,20`` writes other forgetXX
  splits), ``recommendation``, ``graded_list``, ``safety`` (the synthetic preference tasks;
  ``view=pairwise`` turns them into chosen/rejected pairs),
  ``harmless_response`` (the safety task with its harmless reply as chosen: WPN's 1-vs-N rows),
  ``refusal`` (the seven-domain refusal stand-in: ``part=aligned|unlearn|contain``),
  ``planted_negatives`` (U2A's mixed negatives, ``part=forget``, and its validation pairs,
  ``part=validation``), ``arithmetic``
  (multi-step word problems with a gold chain of thought in GSM8K's question/answer layout; AFT's task).

A model source is a Hub id, a local folder, or ``synthetic:tiny?key=value``: a tiny Llama-shaped
model whose tokenizer is trained on the recipe's own data (``alignkit.models.build_tiny_model``),
cached by content so the same recipe always gets the same weights.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import datasets

from alignkit.errors import UserError
from alignkit.models.source import is_hub_id, unreachable_hub_source
from alignkit.paths import cache_root

SYNTHETIC_PREFIX = "synthetic:"


class SourceError(UserError):
    """A malformed or unknown data/model source; the message names the source and the fix."""


# --------------------------------------------------------------------------------------- synthetic


def _preference(name: str):
    from alignkit.data.synthetic import preference as sp
    from alignkit.data.synthetic.harmful import harmless_response_task, planted_rows
    from alignkit.data.synthetic.refusal import refusal_rows

    if name == "arithmetic":  # reasoning word problems in GSM8K's question/answer layout
        from alignkit.data.synthetic.reasoning import arithmetic_task

        return arithmetic_task
    return {
        "recommendation": sp.recommendation_task,
        "graded_list": sp.graded_list_task,
        "safety": sp.safety_task,
        "harmless_response": harmless_response_task,
        "refusal": refusal_rows,
        "planted_negatives": planted_rows,
    }[name]


def _generator(name: str) -> Callable:
    if name == "tofu":
        from alignkit.data.synthetic.tofu import generate_tofu_benchmark

        return generate_tofu_benchmark
    if name == "tiny":
        from alignkit.models.tiny import build_tiny_model

        return build_tiny_model
    return _preference(name)


# Extra query keys a synthetic source takes beyond its generator's keyword arguments.
_EXTRA_KEYS = {
    "tofu": ("split", "forget_percents"),
    "recommendation": ("view",),
    "graded_list": ("view",),
    "safety": ("view",),
    "harmless_response": ("view",),
}
DATA_GENERATORS = (
    "tofu",
    "recommendation",
    "graded_list",
    "safety",
    "harmless_response",
    "refusal",
    "planted_negatives",
    "arithmetic",
)
MODEL_GENERATORS = ("tiny",)
# Generator arguments that are not query parameters (the output folder, the corpus).
_NOT_PARAMS = {"out_dir", "texts"}


@dataclass(frozen=True)
class Source:
    """A parsed source string. ``kind`` is ``synthetic``, ``local`` or ``hub``."""

    text: str
    kind: str
    name: str
    params: dict = field(default_factory=dict)


def _param_types(name: str) -> dict[str, type]:
    sig = inspect.signature(_generator(name))
    types = {}
    for pname, p in sig.parameters.items():
        if pname in _NOT_PARAMS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = p.default
        if isinstance(default, bool | int | float | str):
            types[pname] = type(default)
    for extra in _EXTRA_KEYS.get(name, ()):
        types[extra] = str
    return types


def _convert(value: str, typ: type, key: str, text: str):
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise ValueError(value)
        return typ(value)
    except ValueError:
        raise SourceError(f"{text!r}: `{key}={value}` is not a valid {typ.__name__}.") from None


def _param_default(name: str, key: str):
    parameter = inspect.signature(_generator(name)).parameters.get(key)
    return parameter.default if parameter is not None else None


def _check_count(value, default, key: str, text: str) -> None:
    """Numbers of a generator are counts, sizes, rates or seeds: never negative, and a size whose
    default is positive (``vocab_size``, ``num_people``) is at least 1."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    size = (
        isinstance(value, int) and isinstance(default, int) and not isinstance(default, bool) and default > 0
    )
    least = 1 if size else 0
    if value < least:
        raise SourceError(f"{text!r}: `{key}` must be at least {least}, got {value}.")


def parse_source(text: str, *, what: str = "data") -> Source:
    """Parse and check a source string without loading anything (used by recipe validation)."""
    if not isinstance(text, str) or not text.strip():
        raise SourceError(f"A {what} source must be a non-empty string, got {text!r}.")
    if text.startswith(SYNTHETIC_PREFIX):
        body = text[len(SYNTHETIC_PREFIX) :]
        name, _, query = body.partition("?")
        known = DATA_GENERATORS if what == "data" else MODEL_GENERATORS
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean 'synthetic:{close[0]}'?" if close else ""
            raise SourceError(
                f"Unknown synthetic {what} source {name!r} in {text!r}.{hint} Known: {', '.join(known)}."
            )
        types = _param_types(name)
        params = {}
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
            if key not in types:
                close = difflib.get_close_matches(key, types, n=1)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                raise SourceError(
                    f"{text!r}: unknown parameter `{key}` for synthetic:{name}.{hint} "
                    f"Known: {', '.join(sorted(types))}."
                )
            params[key] = _convert(value, types[key], key, text)
            _check_count(params[key], _param_default(name, key), key, text)
        if params.get("view", "records") not in ("records", "pairwise"):
            raise SourceError(f"{text!r}: `view` must be 'records' or 'pairwise', got {params['view']!r}.")
        return Source(text, "synthetic", name, params)
    if is_hub_id(text):
        return Source(text, "hub", text)
    return Source(text, "local", str(Path(text).expanduser()))  # may not exist (yet); loading says so


# ------------------------------------------------------------------------------------------ caching


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _materialise(directory: Path, build: Callable[[Path], None]) -> Path:
    """Build ``directory`` once: into a temporary sibling, then renamed atomically.

    Every process of a multi-process launch may get here at the same time; the first rename wins
    and the others discard their copy, so nobody ever reads a half-written folder.
    """
    if directory.is_dir():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, directory)
        except OSError:
            if not directory.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def synthetic_tofu_dir(params: dict) -> Path:
    """The folder of a generated TOFU-format benchmark (generated on first use)."""
    from alignkit.data.synthetic.tofu import generate_tofu_benchmark

    kwargs = {k: v for k, v in params.items() if k != "split"}
    if (
        "forget_percents" in kwargs
    ):  # `forget_percents=5,10,15,20`: more forgetXX splits (sequences of requests)
        text = kwargs["forget_percents"]
        try:
            kwargs["forget_percents"] = tuple(int(p) for p in text.split(","))
        except ValueError:
            raise SourceError(
                f"`forget_percents={text}`: give comma-separated integers, e.g. 5,10,15,20."
            ) from None
    directory = cache_root() / "synthetic" / f"tofu-{_digest(kwargs)}"
    return _materialise(directory, lambda tmp: generate_tofu_benchmark(tmp, **kwargs))


def _synthetic_preference_file(name: str, params: dict) -> Path:
    kwargs = {k: v for k, v in params.items() if k != "view"}
    view = params.get("view", "records")
    directory = cache_root() / "synthetic" / f"{name}-{view}-{_digest(kwargs)}"

    def build(tmp: Path) -> None:
        task = _preference(name)(**kwargs)
        rows = task.pairwise() if view == "pairwise" else task.records
        with open(tmp / "data.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")

    return _materialise(directory, build) / "data.jsonl"


# ------------------------------------------------------------------------------------------ loading


def load_source(text: str, config: str | None = None, split: str = "train") -> datasets.Dataset:
    """Load the rows of a data source (see the module docstring)."""
    from alignkit.data.loading import load_rows

    source = parse_source(text)
    if source.kind == "synthetic":
        if source.name == "tofu":
            file = source.params.get("split")
            if file and config and file != config:
                raise SourceError(f"{text!r} names split={file!r} but the dataset config is {config!r}.")
            file = file or config or "full"
            directory = synthetic_tofu_dir(source.params)
            # `split=full+real_authors+world_facts`: the files one after the other (a query string
            # decodes "+" as a space, so both join).
            parts = file.replace("+", " ").split()
            file = "+".join(parts)
            for part in parts:
                if not (directory / f"{part}.json").is_file():
                    names = sorted(p.stem for p in directory.glob("*.json"))
                    close = difflib.get_close_matches(part, names, n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise SourceError(
                        f"{text!r}: the generated benchmark has no split {part!r}.{hint} Splits: {names}."
                    )
            return load_rows(directory, file)
        if config:
            raise SourceError(f"{text!r} takes no dataset config (got {config!r}).")
        return load_rows(_synthetic_preference_file(source.name, source.params))
    if source.kind == "local" and not Path(source.name).exists():
        raise SourceError(f"Dataset path {text!r} does not exist.")
    message = unreachable_hub_source(text, "dataset") if source.kind == "hub" else None
    if message:
        raise SourceError(message)
    try:
        return load_rows(source.name, config, split=split)
    except FileNotFoundError as err:
        raise SourceError(str(err)) from err
    except (ConnectionError, OSError) as err:
        if source.kind == "hub" and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise SourceError(
                f"Cannot load Hub dataset {text!r} (config {config!r}): HF_HUB_OFFLINE=1 and it is not in "
                "the local cache. Point the recipe at a local copy (a file, or a folder holding "
                f"<config>.json), e.g. --train_dataset /path/to/tofu. ({type(err).__name__}: {err})"
            ) from err
        raise


def load_tagged_configs(text: str, config: str, split: str = "train") -> datasets.Dataset:
    """``config="a+b"``: the rows of each config in turn, each with ``dataset_config`` naming its own."""
    parts = [load_source(text, part, split) for part in config.split("+")]
    tagged = [
        rows.add_column("dataset_config", [part] * len(rows))
        for part, rows in zip(config.split("+"), parts, strict=True)
    ]
    common = [c for c in tagged[0].column_names if all(c in t.column_names for t in tagged)]
    return datasets.concatenate_datasets([t.select_columns(common) for t in tagged])


def local_files(text: str) -> str | None:
    """Where a source's files are on this machine (a generated benchmark's folder), if anywhere."""
    source = parse_source(text)
    if source.kind == "synthetic" and source.name == "tofu":
        return str(synthetic_tofu_dir(source.params))
    if source.kind == "synthetic":
        return str(_synthetic_preference_file(source.name, source.params))
    return source.name if source.kind == "local" else None


def chunk_text_rows(rows: datasets.Dataset, tokenizer, window: int) -> datasets.Dataset:
    """Split every ``text`` row into windows of ``window`` tokens (MUSE trains on 2048-token chunks).

    Windows are decoded back to text, which the collator re-tokenises; rows without ``text`` are
    returned unchanged.
    """
    if "text" not in rows.column_names:
        return rows
    if window < 1:
        raise ValueError(f"`text_chunk_tokens` must be >= 1, got {window}.")
    chunks: list[str] = []
    for text in rows["text"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), window):
            piece = tokenizer.decode(ids[start : start + window])
            if piece.strip():
                chunks.append(piece)
    return datasets.Dataset.from_dict({"text": chunks})


def dataset_texts(rows: datasets.Dataset) -> Iterable[str]:
    """Every string in every row (a tiny model's tokenizer is trained on these)."""

    def walk(obj):
        if isinstance(obj, str):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from walk(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from walk(v)

    for row in rows:
        yield from walk(row)


def build_synthetic_model(text: str, corpus: Iterable[str]) -> Path:
    """Materialise ``synthetic:tiny?...`` trained on ``corpus``; returns the model folder."""
    from alignkit.models.tiny import build_tiny_model

    source = parse_source(text, what="model")
    texts = sorted(set(corpus))
    if not texts:
        raise SourceError(
            f"{text!r} needs some text to train its tokenizer on; the recipe's datasets are empty."
        )
    key = _digest({"params": source.params, "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest()})
    directory = cache_root() / "tiny_models" / f"tiny-{key}"
    return _materialise(directory, lambda tmp: build_tiny_model(texts, tmp, **source.params))
