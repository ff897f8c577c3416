"""Dataset presets: one public dataset's published schema -> alignkit's canonical rows, by name.

``dataset_preset: ultrafeedback`` in a recipe (or ``--dataset_preset``, or ``alignkit eval
preference --dataset-preset``) reads the dataset in its published layout, from the Hub id or from a
local copy in the same layout (a file, or a folder ``datasets.load_dataset`` reads), and turns each
row into the rows of one record shape (:mod:`alignkit.data.records`). Options follow the name as a
query string: ``ultrafeedback?score=helpfulness&format=standard``.

=========================  =================================  ===============  =============================================
preset                     dataset (Hub id)                   shape            fields used
=========================  =================================  ===============  =============================================
``ultrafeedback``          openbmb/UltraFeedback              graded list (or  ``instruction``, ``completions[].response``
                                                              its pairs)       and one score per completion (``score=``)
``ultrafeedback_binarized`` HuggingFaceH4/ultrafeedback_bin.  pairwise         ``chosen``, ``rejected`` (conversations, the
                                                                               prompt extracted by TRL), ``score_chosen``,
                                                                               ``score_rejected`` (ties)
``nectar``                 berkeley-nest/Nectar               ranked list (or  ``prompt`` (HH dialogue), ``answers[].answer``,
                                                              its pairs)       ``answers[].rank``
``helpsteer2``             nvidia/HelpSteer2                  graded list      ``prompt``, ``response`` (rows grouped by
                                                                               prompt), the five attributes (``weights=``)
``hh_rlhf``                Anthropic/hh-rlhf                  pairwise or      ``chosen``, ``rejected`` (the prompt is their
                                                              negatives only   shared prefix, TRL's rule)
``pku_saferlhf``           PKU-Alignment/PKU-SafeRLHF         negatives only   ``prompt``, ``response_0/1``,
                                                              or pairwise      ``is_response_0/1_safe``,
                                                                               ``better_response_id``/``safer_response_id``
``gsm8k``                  openai/gsm8k                       QA               ``question``, ``answer`` -> ``final_answer``
``sdpo``                   S-DPO's LastFM/MovieLens/Goodreads 1-vs-N           ``historyList``, ``itemList``,
                                                                               ``trueSelection``
=========================  =================================  ===============  =============================================

The converters live in :mod:`alignkit.data.preset_schemas`. A malformed row raises
:class:`~alignkit.data.records.RecordError` naming the preset, the row and
the field (``preset ultrafeedback, row 12, field `completions[2].overall_score`: ...``). Rows a
preset leaves out by design (a tie under ``ties=drop``, a PKU prompt with no unsafe reply under
``shape=negatives``) are counted and logged, never dropped silently.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from alignkit.data.preset_schemas import (
    SDPO_TEMPLATES,
    UF_ASPECTS,
    PresetError,
    SkipRow,
    gsm8k_rows,
    helpsteer2_rows,
    helpsteer_weights,
    hh_rlhf_rows,
    nectar_rows,
    pku_saferlhf_rows,
    sdpo_rows,
    short_repr,
    ultrafeedback_binarized_rows,
    ultrafeedback_rows,
)
from alignkit.data.records import RecordError
from alignkit.errors import UserError

__all__ = [
    "PRESETS",
    "Preset",
    "PresetError",
    "convert_rows",
    "load_preset_rows",
    "parse_preset",
    "preset_table",
]

logger = logging.getLogger(__name__)

FORMATS = ("conversational", "standard")


@dataclass(frozen=True)
class Option:
    default: Any
    choices: tuple[str, ...] | None  # None: free text, checked by the preset
    help: str


@dataclass(frozen=True)
class Preset:
    """How one public dataset maps to canonical rows."""

    name: str
    dataset: str  # the Hub id
    shape: str
    fields: str  # the published fields the preset reads
    convert: Callable  # (row, options, err) -> list of canonical rows (empty: left out, counted)
    options: dict[str, Option] = field(default_factory=dict)
    group_by: str | None = None  # rows sharing this field's value form one input row (HelpSteer2)
    config_is_data_dir: bool = False  # hh-rlhf's subsets are folders, not configs
    doc: str = ""


def _view_option() -> Option:
    return Option(
        "list",
        ("list", "pairs"),
        "list: one graded/ranked list per prompt (LiPO); pairs: every strictly ordered pair (DPO)",
    )


def _format_option(default: str) -> Option:
    return Option(
        default,
        FORMATS,
        "conversational: user/assistant messages (the model's chat template renders them); "
        "standard: plain text",
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "ultrafeedback",
            "openbmb/UltraFeedback",
            "graded list",
            "instruction, completions[].response, completions[].fine-grained_score | overall_score | "
            "annotations.<aspect>.Rating",
            ultrafeedback_rows,
            {
                "score": Option(
                    "fine_grained",
                    ("fine_grained", "overall", "mean", *UF_ASPECTS),
                    "which rating scores a completion (fine_grained: the published mean of the 4 aspects)",
                ),
                "view": _view_option(),
                "format": _format_option("conversational"),
            },
            doc=ultrafeedback_rows.__doc__ or "",
        ),
        Preset(
            "ultrafeedback_binarized",
            "HuggingFaceH4/ultrafeedback_binarized",
            "pairwise",
            "chosen, rejected (conversations; prompt = shared turns), score_chosen, score_rejected",
            ultrafeedback_binarized_rows,
            {"ties": Option("drop", ("drop", "keep"), "pairs with equal scores: leave out or train on them")},
            doc=ultrafeedback_binarized_rows.__doc__ or "",
        ),
        Preset(
            "nectar",
            "berkeley-nest/Nectar",
            "ranked list",
            "prompt (HH dialogue), answers[].answer, answers[].rank",
            nectar_rows,
            {"view": _view_option(), "format": _format_option("conversational")},
            doc=nectar_rows.__doc__ or "",
        ),
        Preset(
            "helpsteer2",
            "nvidia/HelpSteer2",
            "graded list",
            "prompt, response (grouped by prompt), helpfulness/correctness/coherence/complexity/verbosity",
            helpsteer2_rows,
            {
                "weights": Option(
                    "helpfulness",
                    None,
                    "attribute weights, e.g. helpfulness:1,verbosity:-0.5 (default helpfulness)",
                ),
                "format": _format_option("conversational"),
            },
            group_by="prompt",
            doc=helpsteer2_rows.__doc__ or "",
        ),
        Preset(
            "hh_rlhf",
            "Anthropic/hh-rlhf",
            "pairwise | negatives only",
            "chosen, rejected (whole dialogues; prompt = shared prefix, TRL's extract_prompt)",
            hh_rlhf_rows,
            {
                "shape": Option(
                    "pairwise", ("pairwise", "negatives"), "negatives: rejected replies only (D2O)"
                ),
                "format": _format_option("conversational"),
            },
            config_is_data_dir=True,
            doc=hh_rlhf_rows.__doc__ or "",
        ),
        Preset(
            "pku_saferlhf",
            "PKU-Alignment/PKU-SafeRLHF",
            "negatives only | pairwise",
            "prompt, response_0, response_1, is_response_0_safe, is_response_1_safe, "
            "safer_response_id | better_response_id",
            pku_saferlhf_rows,
            {
                "shape": Option(
                    None,
                    ("negatives", "safer", "better"),
                    "required: negatives (unsafe replies, D2O), safer or better (pairwise)",
                ),
                "format": _format_option("conversational"),
            },
            doc=pku_saferlhf_rows.__doc__ or "",
        ),
        Preset(
            "gsm8k",
            "openai/gsm8k",
            "QA (+ final_answer)",
            "question, answer (final_answer = the N after `####`)",
            gsm8k_rows,
            doc=gsm8k_rows.__doc__ or "",
        ),
        Preset(
            "sdpo",
            "S-DPO sample data (LastFM / MovieLens / Goodreads)",
            "1-vs-N",
            "historyList, itemList, trueSelection",
            sdpo_rows,
            {
                "domain": Option(
                    "music", tuple(SDPO_TEMPLATES), "the prompt wording: music (LastFM), movie, book"
                ),
                "template": Option(
                    "", None, "your own wording with [HistoryHere] and [CansHere] (e.g. a line of S-DPO's)"
                ),
                "format": _format_option("standard"),
            },
            doc=sdpo_rows.__doc__ or "",
        ),
    )
}


# ------------------------------------------------------------------------------------ applying


@dataclass(frozen=True)
class PresetSpec:
    preset: Preset
    options: dict[str, Any]

    @property
    def label(self) -> str:
        given = [f"{k}={v}" for k, v in self.options.items() if v != self.preset.options[k].default]
        return self.preset.name + (f"?{'&'.join(given)}" if given else "")


def parse_preset(text: str) -> PresetSpec:
    """``name?key=value&...`` -> the preset and its options (defaults filled in, every value checked)."""
    if not isinstance(text, str) or not text.strip():
        raise PresetError(f"A dataset preset must be a name, got {text!r}. Known: {', '.join(PRESETS)}.")
    name, _, query = text.strip().partition("?")
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise PresetError(f"Unknown dataset preset {name!r}.{hint} Known: {', '.join(PRESETS)}.")
    preset = PRESETS[name]
    options = {k: o.default for k, o in preset.options.items()}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in preset.options:
            known = ", ".join(preset.options) or "none"
            raise PresetError(f"dataset preset {name!r} has no option `{key}` (options: {known}).")
        choices = preset.options[key].choices
        if choices is not None and value not in choices:
            raise PresetError(f"dataset preset {name!r}: `{key}={value}` is not one of {', '.join(choices)}.")
        options[key] = value
    for key, value in options.items():
        if value is None:
            choices = preset.options[key].choices or ()
            raise PresetError(
                f"dataset preset {name!r} needs `{key}=`: {preset.options[key].help}. "
                f"E.g. {name}?{key}={choices[0] if choices else '...'}"
            )
    if name == "helpsteer2":
        helpsteer_weights(options["weights"])
    return PresetSpec(preset, options)


def convert_rows(
    rows, spec: PresetSpec | str, *, source: str | None = None, on_invalid: str = "raise"
) -> list[dict]:
    """Every input row (a ``datasets.Dataset`` or a list of dicts) -> canonical rows, in order.

    ``on_invalid="raise"`` stops at the first malformed row (the error names the preset, row and
    field); ``"skip"`` leaves such rows out and logs how many and the first error (a recipe's
    ``on_invalid``), as the collator does for rows of the canonical shapes.
    """
    if isinstance(spec, str):
        spec = parse_preset(spec)
    preset = spec.preset
    where = f"preset {spec.label}" + (f" ({source})" if source else "")
    rows = list(rows)
    units: list[tuple[int, Any]]
    if preset.group_by:
        groups: dict[Any, list[int]] = {}
        for i, row in enumerate(rows):
            key = row.get(preset.group_by) if isinstance(row, dict) else None
            if not isinstance(key, str):
                raise RecordError(where, i, preset.group_by, f"must be a string, got {short_repr(key)}")
            groups.setdefault(key, []).append(i)
        units = [(members[0], [rows[i] for i in members]) for members in groups.values()]
    else:
        units = list(enumerate(rows))
    out: list[dict] = []
    skipped: dict[str, int] = {}
    invalid: list[str] = []
    for index, unit in units:

        def err(field_name: str, problem: str, index=index) -> RecordError:
            return RecordError(where, index, field_name, problem)

        if not preset.group_by and not isinstance(unit, dict):
            raise err("<row>", f"must be a mapping, got {type(unit).__name__}")
        try:
            out.extend(preset.convert(unit, spec.options, err))
        except SkipRow as skip:
            skipped[skip.reason] = skipped.get(skip.reason, 0) + 1
        except RecordError as error:
            if on_invalid != "skip":
                raise
            invalid.append(str(error))
    if invalid:
        logger.warning(
            "%s: skipped %d invalid row(s) (on_invalid='skip'); first: %s", where, len(invalid), invalid[0]
        )
    if skipped:
        logger.warning(
            "%s: left out %s of %d input row(s) by design: %s",
            where,
            sum(skipped.values()),
            len(units),
            "; ".join(f"{n} with {reason}" for reason, n in skipped.items()),
        )
    if not out:
        reasons = [*skipped, *(["invalid rows; first: " + invalid[0]] if invalid else [])]
        raise UserError(f"{where}: no row could be used ({', '.join(reasons) or 'the input is empty'}).")
    return out


def load_preset_rows(
    source: str,
    spec: PresetSpec | str,
    config: str | None = None,
    split: str = "train",
    *,
    on_invalid: str = "raise",
):
    """Read ``source`` in the preset's published layout and convert it: a ``datasets.Dataset``.

    ``source``: a Hub id, a local JSON/JSONL file, or a local folder in the Hub repository's layout
    (``datasets.load_dataset`` reads both the same way). For hh-rlhf the config names the subset
    folder (``harmless-base``), as on the Hub.
    """
    import datasets

    from alignkit.data.loading import load_json_file

    if isinstance(spec, str):
        spec = parse_preset(spec)
    path = Path(source).expanduser()
    if path.is_file():
        # One file is one split: a slice of the split (`train[:95%]`, `test[95%:]`) applies to the
        # file's rows, so a recipe's train/eval slices stay disjoint on a local copy too.
        name, bracket, rest = split.partition("[")
        raw = load_json_file(path)
        if bracket:
            raw = datasets.load_dataset("json", data_files=str(path), split=f"train[{rest}")
        if name not in ("train", ""):
            logger.info("%s is one file: split %r reads its rows (a file has no named splits).", path, name)
    else:
        if str(source).startswith(("/", "./", "../", "~")) and not path.exists():
            from alignkit.errors import MissingFileError

            raise MissingFileError(f"{source} does not exist")
        kwargs = {"data_dir": config} if spec.preset.config_is_data_dir else {"name": config}
        try:
            raw = datasets.load_dataset(str(path) if path.is_dir() else str(source), split=split, **kwargs)
        except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as err:
            raise UserError(
                f"Cannot load {source!r} (config {config!r}, split {split!r}) for preset {spec.label}: "
                f"{type(err).__name__}: {err}. Offline, point at a local copy in the same layout (a file, "
                f"or a folder of the Hub repository's files)."
            ) from err
    rows = convert_rows(raw, spec, source=str(source), on_invalid=on_invalid)
    return datasets.Dataset.from_list(rows)


def preset_table() -> list[tuple[str, str, str, str]]:
    """(preset, Hub id, shape, fields used) of every preset: the README's table."""
    return [(p.name, p.dataset, p.shape, p.fields) for p in PRESETS.values()]
