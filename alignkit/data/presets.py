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

A malformed row raises :class:`~alignkit.data.records.RecordError` naming the preset, the row and
the field (``preset ultrafeedback, row 12, field `completions[2].overall_score`: ...``). Rows a
preset leaves out by design (a tie under ``ties=drop``, a PKU prompt with no unsafe reply under
``shape=negatives``) are counted and logged, never dropped silently.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from alignkit.data.records import RecordError, split_implicit_prompt
from alignkit.errors import UserError

logger = logging.getLogger(__name__)

FORMATS = ("conversational", "standard")


class PresetError(UserError):
    """An unknown preset or option; the message names it and the known ones."""


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


class _Skip(Exception):
    """A row the preset leaves out by design (counted and logged by reason)."""

    def __init__(self, reason: str):
        self.reason = reason


# ------------------------------------------------------------------------------------- helpers


def _get(row: dict, name: str, err, types: type | tuple = str) -> Any:
    value = row.get(name) if isinstance(row, dict) else None
    if value is None:
        raise err(name, f"is missing; the row has fields {sorted(row) if isinstance(row, dict) else '?'}")
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _tuple(types):
        raise err(name, f"must be {_type_names(types)}, got {type(value).__name__} {_short(value)}")
    return value


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in _tuple(types))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any, err, name: str) -> float | None:
    """A rating given as a number or a numeric string; ``None`` for a missing one (None, NaN, "N/A", "")."""
    if value is None or (isinstance(value, str) and value.strip().upper() in ("", "N/A", "NA", "NONE")):
        return None
    if isinstance(value, bool):
        raise err(name, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise err(name, f"must be a number (or N/A when missing), got {_short(value)}") from None
    if math.isnan(number):
        return None  # UltraFeedback publishes NaN fine-grained scores where every aspect is N/A
    if not math.isfinite(number):
        raise err(name, f"must be a finite number, got {value!r}")
    return number


def _wrap(prompt: str | list, completions: list, fmt: str) -> tuple[Any, list]:
    """The prompt and completions in ``fmt``: conversational wraps plain text as user/assistant turns."""
    if fmt == "standard":
        return prompt, completions
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    return messages, [[{"role": "assistant", "content": c}] for c in completions]


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


def hh_dialogue(text: str, err, name: str) -> list[dict]:
    """An Anthropic-style ``\\n\\nHuman: ...\\n\\nAssistant: ...`` string as role/content messages.

    The split is on ``Human:``/``Assistant:`` at the start of the text or after a blank line, the
    turn markers HH-RLHF and Nectar use; a trailing empty ``Assistant:`` (Nectar's prompts end with
    it) is dropped.
    """
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise err(name, f"is not a dialogue of `Human:`/`Assistant:` turns: {_short(text)}")
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    if messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    for j, message in enumerate(messages):
        if not message["content"]:
            raise err(name, f"turn {j} ({message['role']}) is empty")
    return messages


def _view(row: dict, opts: dict) -> list[dict]:
    """A list row as it is (``view=list``) or as every strictly ordered pair (``view=pairs``: LiPO's
    DPO_BT baseline, "all pairs of the list"; ties give no pair)."""
    if opts.get("view", "list") == "list":
        return [row]
    kind = "ranks" if "ranks" in row else "scores"
    values, completions = row[kind], row["completions"]

    def better(a, b):
        return values[a] < values[b] if kind == "ranks" else values[a] > values[b]

    k = len(completions)
    pairs = [
        {"prompt": row["prompt"], "chosen": completions[a], "rejected": completions[b]}
        for a in range(k)
        for b in range(k)
        if better(a, b)
    ]
    if not pairs:
        raise _Skip("no strictly ordered pair (view=pairs)")
    return pairs


def _view_option() -> Option:
    return Option(
        "list",
        ("list", "pairs"),
        "list: one graded/ranked list per prompt (LiPO); pairs: every strictly ordered pair (DPO)",
    )


# ----------------------------------------------------------------------------------- presets

UF_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


def _ultrafeedback(row: dict, opts: dict, err) -> list[dict]:
    """openbmb/UltraFeedback: 4 completions (sometimes fewer) with GPT-4 ratings of four aspects.

    ``score=fine_grained`` (default): the published ``fine-grained_score`` (the mean of the four
    aspect ratings; what HuggingFaceH4/ultrafeedback_binarized ranks by); ``overall``: the
    critique's ``overall_score`` (1-10, corrected upstream in Dec 2023); ``mean``: the mean of the
    numeric aspect ratings recomputed here (``N/A`` ratings skipped); or one aspect by name. A
    completion whose chosen score is missing (``N/A``) is left out of its list (counted); a list left
    with fewer than 2 completions is left out.
    """
    instruction = _get(row, "instruction", err)
    completions = _get(row, "completions", err, list)
    texts, scores, missing = [], [], 0
    for j, completion in enumerate(completions):
        where = f"completions[{j}]"
        if not isinstance(completion, dict):
            raise err(where, f"must be an object, got {type(completion).__name__}")
        response = _get(completion, "response", lambda f, p, w=where: err(f"{w}.{f}", p))
        score = _uf_score(completion, opts["score"], err, where)
        if score is None:
            missing += 1
            continue
        texts.append(response)
        scores.append(score)
    if len(texts) < 2:
        raise _Skip(f"fewer than 2 completions with a {opts['score']} score")
    prompt, completions_out = _wrap(instruction, texts, opts["format"])
    return _view({"prompt": prompt, "completions": completions_out, "scores": scores}, opts)


def _uf_score(completion: dict, kind: str, err, where: str) -> float | None:
    if kind == "fine_grained":
        return _number(completion.get("fine-grained_score"), err, f"{where}.fine-grained_score")
    if kind == "overall":
        return _number(completion.get("overall_score"), err, f"{where}.overall_score")
    annotations = completion.get("annotations")
    if not isinstance(annotations, dict):
        raise err(f"{where}.annotations", f"must be an object of aspect ratings, got {_short(annotations)}")
    aspects = UF_ASPECTS if kind == "mean" else (kind,)
    values = []
    for aspect in aspects:
        entry = annotations.get(aspect)
        if isinstance(entry, list):  # some releases wrap one aspect's annotation in a list
            entry = entry[0] if entry else None
        if entry is None:
            if kind != "mean":
                return None
            continue
        if not isinstance(entry, dict):
            raise err(
                f"{where}.annotations.{aspect}", f"must be an object with `Rating`, got {_short(entry)}"
            )
        value = _number(entry.get("Rating"), err, f"{where}.annotations.{aspect}.Rating")
        if value is not None:
            values.append(value)
    return sum(values) / len(values) if values else None


def _ultrafeedback_binarized(row: dict, opts: dict, err) -> list[dict]:
    """HuggingFaceH4/ultrafeedback_binarized (``train_prefs``/``test_prefs``): one pair per prompt.

    ``chosen``/``rejected`` are whole conversations (the user turn included), so the prompt is
    extracted by TRL's rule, as ``DPOTrainer`` does; the published string ``prompt`` and
    ``messages`` are not used. ``ties=drop`` (default) leaves out pairs whose ``score_chosen``
    equals ``score_rejected`` (no preference to learn); ``ties=keep`` trains on them.
    """
    chosen = _get(row, "chosen", err, list)
    rejected = _get(row, "rejected", err, list)
    if opts["ties"] == "drop":
        a = _number(row.get("score_chosen"), err, "score_chosen")
        b = _number(row.get("score_rejected"), err, "score_rejected")
        if a is not None and a == b:
            raise _Skip("tied scores (ties=drop)")
    return [{"chosen": chosen, "rejected": rejected}]


def _nectar(row: dict, opts: dict, err) -> list[dict]:
    """berkeley-nest/Nectar: an HH-style prompt (multi-turn when ``turns`` > 1) and 7 ranked answers.

    ``rank`` is 1 for the best answer; an answer without a rank is left out of its list (counted).
    ``format=conversational`` (default) parses the prompt's ``Human:``/``Assistant:`` turns into
    messages; ``standard`` keeps it verbatim (it ends with ``Assistant:``) and puts one space
    before each answer, as HH-RLHF's own dialogues have.
    """
    prompt = _get(row, "prompt", err)
    answers = _get(row, "answers", err, list)
    texts, ranks = [], []
    for j, answer in enumerate(answers):
        where = f"answers[{j}]"
        if not isinstance(answer, dict):
            raise err(where, f"must be an object with `answer` and `rank`, got {type(answer).__name__}")
        text = _get(answer, "answer", lambda f, p, w=where: err(f"{w}.{f}", p))
        rank = _number(answer.get("rank"), err, f"{where}.rank")
        if rank is None:
            continue
        if rank < 1 or rank != int(rank):
            raise err(f"{where}.rank", f"must be a whole number >= 1 (1 = best), got {answer.get('rank')!r}")
        texts.append(text)
        ranks.append(rank)
    if len(texts) < 2:
        raise _Skip("fewer than 2 ranked answers")
    if opts["format"] == "standard":
        return _view({"prompt": prompt, "completions": [_spaced(t) for t in texts], "ranks": ranks}, opts)
    messages = hh_dialogue(prompt, err, "prompt")
    if messages[-1]["role"] != "user":
        raise err("prompt", "must end with a `Human:` turn (then an empty `Assistant:`)")
    _, completions = _wrap(messages, texts, "conversational")
    return _view({"prompt": messages, "completions": completions, "ranks": ranks}, opts)


def _spaced(text: str) -> str:
    return text if text[:1].isspace() else " " + text


HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
_EXTRA_ID = re.compile(r"\n?<extra_id_1>(User|Assistant)\n")


def helpsteer_weights(text: str) -> dict[str, float]:
    """``helpfulness`` or ``helpfulness:0.5,correctness:0.5,...`` as attribute weights (checked)."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.strip().partition(":")
        if name not in HELPSTEER_ATTRIBUTES:
            raise PresetError(
                f"helpsteer2: unknown attribute {name!r} in weights={text!r}; attributes: "
                f"{', '.join(HELPSTEER_ATTRIBUTES)} (e.g. weights=helpfulness:1,verbosity:-0.5)"
            )
        try:
            weights[name] = float(value) if value else 1.0
        except ValueError:
            raise PresetError(f"helpsteer2: weight of {name} in weights={text!r} is not a number") from None
    return weights


def _helpsteer_prompt(text: str, fmt: str, err):
    """HelpSteer2 prompts hold earlier turns after ``<extra_id_1>User``/``<extra_id_1>Assistant`` lines
    (the card's multi-turn layout; the first turn is the user's, unmarked)."""
    parts = _EXTRA_ID.split(text)
    if len(parts) == 1 or fmt == "standard":
        return text
    messages = [{"role": "user", "content": parts[0].strip()}]
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": speaker.lower(), "content": content.strip()})
    if messages[-1]["role"] != "user" or any(not m["content"] for m in messages):
        raise err("prompt", "a multi-turn prompt must alternate non-empty turns and end with a user turn")
    return messages


def _helpsteer2(group: list[dict], opts: dict, err) -> list[dict]:
    """nvidia/HelpSteer2: one row per response, 0-4 ratings of five attributes; rows with the same
    ``prompt`` (two per prompt) form one graded list. The score of a response is the weighted sum
    of its attributes, ``weights=`` (default ``helpfulness``: the card's overall rating; the
    HelpSteer2 paper's reward models use other, model-specific combinations, which you give as
    ``weights=helpfulness:a,correctness:b,...``)."""
    weights = helpsteer_weights(opts["weights"])
    prompt_text = _get(group[0], "prompt", err)
    texts, scores = [], []
    for j, row in enumerate(group):
        texts.append(_get(row, "response", lambda f, p, j=j: err(f"{f} (response {j} of the prompt)", p)))
        total = 0.0
        for name, w in weights.items():
            value = row.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 4:
                raise err(name, f"must be a rating from 0 to 4, got {_short(value)}")
            total += w * float(value)
        scores.append(total)
    if len(texts) < 2:
        raise _Skip("a prompt with a single response")
    prompt = _helpsteer_prompt(prompt_text, opts["format"], err)
    prompt, completions = _wrap(prompt, texts, opts["format"])
    return [{"prompt": prompt, "completions": completions, "scores": scores}]


def _hh_rlhf(row: dict, opts: dict, err) -> list[dict]:
    """Anthropic/hh-rlhf: ``chosen``/``rejected`` whole dialogues sharing the prompt.

    The prompt is their shared prefix by TRL's ``extract_prompt``: on the dialogue strings
    (``format=standard``: the prompt ends with ``Assistant:``, completions start with a space) or,
    by default, on the dialogues parsed into messages (the prompt is the shared turns).
    ``shape=negatives`` keeps only the prompt and the rejected reply (the harmless subset's
    human-dispreferred replies as D2O's negatives); ``shape=pairwise`` (default) both.
    """
    chosen, rejected = _get(row, "chosen", err), _get(row, "rejected", err)
    if opts["format"] == "conversational":
        chosen, rejected = hh_dialogue(chosen, err, "chosen"), hh_dialogue(rejected, err, "rejected")
    split = split_implicit_prompt({"chosen": chosen, "rejected": rejected}, err)
    if opts["shape"] == "negatives":
        return [{"prompt": split["prompt"], "rejected": [split["rejected"]]}]
    return [split]


def _pku_saferlhf(row: dict, opts: dict, err) -> list[dict]:
    """PKU-Alignment/PKU-SafeRLHF: a prompt, two replies, a safety flag each, and which is better
    (helpfulness) and which safer. ``shape`` has no default, because the dataset answers two questions:
    ``negatives`` (the unsafe replies as negatives, for D2O; prompts with none are left out),
    ``safer`` or ``better`` (pairwise by ``safer_response_id`` / ``better_response_id``)."""
    prompt = _get(row, "prompt", err)
    replies = [_get(row, "response_0", err), _get(row, "response_1", err)]
    shape = opts["shape"]
    if shape == "negatives":
        unsafe = [
            reply for k, reply in enumerate(replies) if not _get(row, f"is_response_{k}_safe", err, bool)
        ]
        if not unsafe:
            raise _Skip("both replies are safe (shape=negatives)")
        p, completions = _wrap(prompt, unsafe, opts["format"])
        return [{"prompt": p, "rejected": completions}]
    key = f"{shape}_response_id"
    winner = _get(row, key, err, int)
    if winner not in (0, 1):
        raise err(key, f"must be 0 or 1, got {winner!r}")
    if replies[0] == replies[1]:
        raise _Skip("identical replies")
    p, (chosen, rejected) = _wrap(prompt, [replies[winner], replies[1 - winner]], opts["format"])
    return [{"prompt": p, "chosen": chosen, "rejected": rejected}]


GSM8K_FINAL = re.compile(r"\n####\s*(.+?)\s*$")


def gsm8k_final_answer(answer: str) -> str | None:
    """The text after GSM8K's closing ``#### `` marker (e.g. ``"18"``), as written; None without one."""
    match = GSM8K_FINAL.search(answer)
    return match.group(1) if match else None


def _gsm8k(row: dict, opts: dict, err) -> list[dict]:
    """openai/gsm8k (``main``/``socratic``): question, worked answer ending in ``#### N``.

    Returns a QA row (the whole worked answer is the training target) plus ``final_answer``, the
    ``N`` after ``####`` exactly as written (commas included), for a verifier to compare against.
    """
    question, answer = _get(row, "question", err), _get(row, "answer", err)
    final = gsm8k_final_answer(answer)
    if final is None:
        raise err(
            "answer", f"has no final line `#### N` to take the final answer from: {_short(answer[-60:])}"
        )
    return [{"question": question, "answer": answer, "final_answer": final}]


SDPO_TEMPLATES = {
    # S-DPO's own prompt files (github.com/chenyuxin1999/S-DPO, prompt/*.txt) hold 10 wordings per
    # domain drawn at random; these are single wordings with the same slots. Give one of S-DPO's
    # lines as `template=` to reproduce a run of theirs exactly.
    "music": "A listener recently played music by [HistoryHere]. Which artist will they listen to next? "
    "Choose one of these [NumCans] artists: [CansHere]. Answer:",
    "movie": "A viewer recently watched [HistoryHere]. Which movie will they watch next? "
    "Choose one of these [NumCans] movies: [CansHere]. Answer:",
    "book": "A reader recently read [HistoryHere]. Which book will they read next? "
    "Choose one of these [NumCans] books: [CansHere]. Answer:",
}


def _sdpo(row: dict, opts: dict, err) -> list[dict]:
    """S-DPO's recommendation rows (LastFM, MovieLens, Goodreads): ``historyList`` (names joined by
    ``::``, or a list), the candidate ``itemList`` and the ``trueSelection`` among them -> one prompt,
    the true item as ``chosen`` and every other candidate as ``rejected`` (S-DPO draws ``num_negatives``
    of them per step). The prompt fills ``[HistoryHere]`` and ``[CansHere]`` (comma-joined, as S-DPO's
    ``Prompt`` does) in ``template`` (or the ``domain``'s wording); each answer is `` <item>``."""
    history = _get(row, "historyList", err, (str, list))
    items = _get(row, "itemList", err, list)
    target = _get(row, "trueSelection", err)
    history = history.split("::") if isinstance(history, str) else history
    if not history or not all(isinstance(h, str) and h for h in history):
        raise err("historyList", "must name at least one item (names joined by `::`, or a list)")
    if not all(isinstance(item, str) and item for item in items):
        raise err("itemList", "must be a list of non-empty item names")
    if target not in items:
        raise err(
            "trueSelection", f"{_short(target)} is not one of the {len(items)} candidates of `itemList`"
        )
    others = [item for item in items if item != target]
    if not others:
        raise err("itemList", "holds no candidate besides `trueSelection`")
    template = opts["template"] or SDPO_TEMPLATES[opts["domain"]]
    prompt = (
        template.replace("[HistoryHere]", ", ".join(history))
        .replace("[CansHere]", ", ".join(items))
        .replace("[NumCans]", str(len(items)))
    )
    if opts["format"] == "standard":
        return [{"prompt": prompt, "chosen": " " + target, "rejected": [" " + o for o in others]}]
    p, completions = _wrap(prompt, [target, *others], "conversational")
    return [{"prompt": p, "chosen": completions[0], "rejected": completions[1:]}]


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
            _ultrafeedback,
            {
                "score": Option(
                    "fine_grained",
                    ("fine_grained", "overall", "mean", *UF_ASPECTS),
                    "which rating scores a completion (fine_grained: the published mean of the 4 aspects)",
                ),
                "view": _view_option(),
                "format": _format_option("conversational"),
            },
            doc=_ultrafeedback.__doc__ or "",
        ),
        Preset(
            "ultrafeedback_binarized",
            "HuggingFaceH4/ultrafeedback_binarized",
            "pairwise",
            "chosen, rejected (conversations; prompt = shared turns), score_chosen, score_rejected",
            _ultrafeedback_binarized,
            {"ties": Option("drop", ("drop", "keep"), "pairs with equal scores: leave out or train on them")},
            doc=_ultrafeedback_binarized.__doc__ or "",
        ),
        Preset(
            "nectar",
            "berkeley-nest/Nectar",
            "ranked list",
            "prompt (HH dialogue), answers[].answer, answers[].rank",
            _nectar,
            {"view": _view_option(), "format": _format_option("conversational")},
            doc=_nectar.__doc__ or "",
        ),
        Preset(
            "helpsteer2",
            "nvidia/HelpSteer2",
            "graded list",
            "prompt, response (grouped by prompt), helpfulness/correctness/coherence/complexity/verbosity",
            _helpsteer2,
            {
                "weights": Option(
                    "helpfulness",
                    None,
                    "attribute weights, e.g. helpfulness:1,verbosity:-0.5 (default helpfulness)",
                ),
                "format": _format_option("conversational"),
            },
            group_by="prompt",
            doc=_helpsteer2.__doc__ or "",
        ),
        Preset(
            "hh_rlhf",
            "Anthropic/hh-rlhf",
            "pairwise | negatives only",
            "chosen, rejected (whole dialogues; prompt = shared prefix, TRL's extract_prompt)",
            _hh_rlhf,
            {
                "shape": Option(
                    "pairwise", ("pairwise", "negatives"), "negatives: rejected replies only (D2O)"
                ),
                "format": _format_option("conversational"),
            },
            config_is_data_dir=True,
            doc=_hh_rlhf.__doc__ or "",
        ),
        Preset(
            "pku_saferlhf",
            "PKU-Alignment/PKU-SafeRLHF",
            "negatives only | pairwise",
            "prompt, response_0, response_1, is_response_0_safe, is_response_1_safe, "
            "safer_response_id | better_response_id",
            _pku_saferlhf,
            {
                "shape": Option(
                    None,
                    ("negatives", "safer", "better"),
                    "required: negatives (unsafe replies, D2O), safer or better (pairwise)",
                ),
                "format": _format_option("conversational"),
            },
            doc=_pku_saferlhf.__doc__ or "",
        ),
        Preset(
            "gsm8k",
            "openai/gsm8k",
            "QA (+ final_answer)",
            "question, answer (final_answer = the N after `####`)",
            _gsm8k,
            doc=_gsm8k.__doc__ or "",
        ),
        Preset(
            "sdpo",
            "S-DPO sample data (LastFM / MovieLens / Goodreads)",
            "1-vs-N",
            "historyList, itemList, trueSelection",
            _sdpo,
            {
                "domain": Option(
                    "music", tuple(SDPO_TEMPLATES), "the prompt wording: music (LastFM), movie, book"
                ),
                "template": Option(
                    "", None, "your own wording with [HistoryHere] and [CansHere] (e.g. a line of S-DPO's)"
                ),
                "format": _format_option("standard"),
            },
            doc=_sdpo.__doc__ or "",
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
                raise RecordError(where, i, preset.group_by, f"must be a string, got {_short(key)}")
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
        except _Skip as skip:
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
