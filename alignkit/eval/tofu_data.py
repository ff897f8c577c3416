"""Reading the TOFU eval files (``shared/design/benchmarks.md`` §2.1-§2.3).

``data`` is a Hugging Face dataset id (``locuslab/TOFU``, read with
``datasets.load_dataset(id, config)``) or a local folder holding the same ``<config>.json`` files
(JSON Lines); both go through :func:`alignkit.data.loading.load_rows` and share everything after
reading. Rows are keyed by their position in the file, never by question text (``full.json``
repeats a question).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.errors import MissingFileError

DEFAULT_DATA = "locuslab/TOFU"


@dataclass(frozen=True)
class TofuTaskSpec:
    """One of the four TOFU eval tasks (§2.3).

    ``correct_field`` is the Truth Ratio's "correct" answer (the paraphrase for forget/retain, the
    answer itself for Real Authors / World Facts); ``option_normalised`` selects the probability
    normalised over the answer and the wrong options.
    """

    key: str  # metric prefix: forget | retain | ra | wf
    config: str  # file / Hub config name
    correct_field: str
    option_normalised: bool
    title: str


@dataclass
class TofuItem:
    index: int  # row in the eval file
    question: str
    answer: str
    correct: str
    wrong: list[str]


@dataclass
class TofuTask:
    spec: TofuTaskSpec
    items: list[TofuItem]
    source: str  # where the rows came from, for messages and logs
    total_rows: int = 0  # rows in the file before any limit
    extra: dict = field(default_factory=dict)


def task_specs(forget_split: str) -> list[TofuTaskSpec]:
    """The forget task for ``forget_split`` plus the three fixed utility tasks."""
    if not re.fullmatch(r"forget\d+", forget_split):
        raise ValueError(
            f"forget split must be a TOFU forget split such as 'forget01', 'forget05' or 'forget10', got {forget_split!r}"
        )
    return [
        TofuTaskSpec(
            "forget", f"{forget_split}_perturbed", "paraphrased_answer", False, f"Forget ({forget_split})"
        ),
        TofuTaskSpec("retain", "retain_perturbed", "paraphrased_answer", False, "Retain"),
        TofuTaskSpec("ra", "real_authors_perturbed", "answer", True, "Real Authors"),
        TofuTaskSpec("wf", "world_facts_perturbed", "answer", True, "World Facts"),
    ]


def is_local(data: str | Path) -> bool:
    """A path that exists, or looks like one, is read locally; anything else is a Hub id."""
    s = str(data)
    return Path(s).exists() or s.startswith(("/", "./", "../", "~")) or s.endswith(".json")


def describe_source(data: str | Path, config: str) -> str:
    if is_local(data):
        return str(Path(data).expanduser() / f"{config}.json")
    return f"Hub dataset {data!s}, config {config!r}"


class TofuDataUnavailable(MissingFileError):
    """The Hub copy of a TOFU config could not be loaded (offline, no access): not a missing split."""


def load_tofu(data: str | Path = DEFAULT_DATA, config: str = "forget10_perturbed") -> list[dict]:
    """Rows of one TOFU config as plain dicts, from a Hub id or a local folder of ``<config>.json``."""
    from alignkit.data.loading import config_file, load_row_dicts

    source = describe_source(data, config)
    if is_local(data):
        folder = Path(data).expanduser()
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise MissingFileError(
                f"TOFU data folder {folder} {what}; pass the folder holding {config}.json."
            )
        if config_file(folder, config) is None:
            raise MissingFileError(f"TOFU file missing: {source} (no {config}.json in {folder}).")
        return load_row_dicts(folder, config)
    try:
        return load_row_dicts(str(data), config)
    except (ConnectionError, OSError, ValueError) as err:
        raise TofuDataUnavailable(
            f"Could not load {source}: {err}. Pass a local folder holding the TOFU json files instead "
            "(`--data DIR` / `data=DIR`), or allow Hub access."
        ) from err


def _check_row(row: dict, i: int, source: str, spec: TofuTaskSpec) -> TofuItem:
    def text(name: str) -> str:
        value = row.get(name)
        if not isinstance(value, str):
            what = "missing" if value is None else f"a {type(value).__name__}, not a string"
            raise ValueError(f"{source}: row {i}: field {name!r} is {what}.")
        return value

    wrong = row.get("perturbed_answer")
    if not isinstance(wrong, list) or not wrong or not all(isinstance(w, str) for w in wrong):
        what = "missing" if wrong is None else "not a non-empty list of strings"
        raise ValueError(f"{source}: row {i}: field 'perturbed_answer' is {what}.")
    return TofuItem(i, text("question"), text("answer"), text(spec.correct_field), list(wrong))


def load_task(data: str | Path, spec: TofuTaskSpec, *, max_rows: int | None = None) -> TofuTask:
    """Read and check one task's rows; keep the first ``max_rows`` (after the protocol's own cap)."""
    source = describe_source(data, spec.config)
    try:
        rows = load_tofu(data, spec.config)
    except FileNotFoundError as err:
        # Only a file that is not there is a split TOFU does not ship; an unreachable Hub says so itself.
        if spec.key == "forget" and not isinstance(err, TofuDataUnavailable):
            split = spec.config.removesuffix("_perturbed")
            raise MissingFileError(
                f"forget split {split!r} has no perturbed eval file ({source}). Truth Ratio and Forget "
                f"Quality need '{spec.config}' (paraphrased and perturbed answers); TOFU ships it only "
                f"for forget01, forget05 and forget10. Underlying error: {err}"
            ) from err
        raise
    if not rows:
        raise ValueError(f"{source} has no rows.")
    kept = rows[:max_rows] if max_rows is not None else rows
    items = [_check_row(r, i, source, spec) for i, r in enumerate(kept)]
    return TofuTask(spec, items, source, total_rows=len(rows))
