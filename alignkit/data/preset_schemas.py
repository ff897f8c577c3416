"""Each public dataset's published schema -> canonical rows: the converters behind
:mod:`alignkit.data.presets` (which registers them by name with their options).

A converter takes one input row (HelpSteer2: the rows of one prompt), the preset's options and an
``err(field, problem)`` that builds the row's :class:`~alignkit.data.records.RecordError`; it returns
the canonical rows, or raises :class:`SkipRow` for a row the preset leaves out by design.
"""

from __future__ import annotations

import math
import re
from typing import Any

from alignkit.data.records import split_implicit_prompt
from alignkit.errors import UserError


class PresetError(UserError):
    """An unknown preset or option; the message names it and the known ones."""


class SkipRow(Exception):
    """A row the preset leaves out by design (counted and logged by reason)."""

    def __init__(self, reason: str):
        self.reason = reason


# ------------------------------------------------------------------------------------- helpers


def _get(row: dict, name: str, err, types: type | tuple = str) -> Any:
    value = row.get(name) if isinstance(row, dict) else None
    if value is None:
        raise err(name, f"is missing; the row has fields {sorted(row) if isinstance(row, dict) else '?'}")
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _tuple(types):
        raise err(name, f"must be {_type_names(types)}, got {type(value).__name__} {short_repr(value)}")
    return value


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in _tuple(types))


def short_repr(value: Any) -> str:
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
        raise err(name, f"must be a number (or N/A when missing), got {short_repr(value)}") from None
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
        raise err(name, f"is not a dialogue of `Human:`/`Assistant:` turns: {short_repr(text)}")
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
        raise SkipRow("no strictly ordered pair (view=pairs)")
    return pairs


# ----------------------------------------------------------------------------------- presets

UF_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


def ultrafeedback_rows(row: dict, opts: dict, err) -> list[dict]:
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
        raise SkipRow(f"fewer than 2 completions with a {opts['score']} score")
    prompt, completions_out = _wrap(instruction, texts, opts["format"])
    return _view({"prompt": prompt, "completions": completions_out, "scores": scores}, opts)


def _uf_score(completion: dict, kind: str, err, where: str) -> float | None:
    if kind == "fine_grained":
        return _number(completion.get("fine-grained_score"), err, f"{where}.fine-grained_score")
    if kind == "overall":
        return _number(completion.get("overall_score"), err, f"{where}.overall_score")
    annotations = completion.get("annotations")
    if not isinstance(annotations, dict):
        raise err(
            f"{where}.annotations", f"must be an object of aspect ratings, got {short_repr(annotations)}"
        )
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
                f"{where}.annotations.{aspect}", f"must be an object with `Rating`, got {short_repr(entry)}"
            )
        value = _number(entry.get("Rating"), err, f"{where}.annotations.{aspect}.Rating")
        if value is not None:
            values.append(value)
    return sum(values) / len(values) if values else None


def ultrafeedback_binarized_rows(row: dict, opts: dict, err) -> list[dict]:
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
            raise SkipRow("tied scores (ties=drop)")
    return [{"chosen": chosen, "rejected": rejected}]


def nectar_rows(row: dict, opts: dict, err) -> list[dict]:
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
        raise SkipRow("fewer than 2 ranked answers")
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


def helpsteer2_rows(group: list[dict], opts: dict, err) -> list[dict]:
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
                raise err(name, f"must be a rating from 0 to 4, got {short_repr(value)}")
            total += w * float(value)
        scores.append(total)
    if len(texts) < 2:
        raise SkipRow("a prompt with a single response")
    prompt = _helpsteer_prompt(prompt_text, opts["format"], err)
    prompt, completions = _wrap(prompt, texts, opts["format"])
    return [{"prompt": prompt, "completions": completions, "scores": scores}]


def hh_rlhf_rows(row: dict, opts: dict, err) -> list[dict]:
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


def pku_saferlhf_rows(row: dict, opts: dict, err) -> list[dict]:
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
            raise SkipRow("both replies are safe (shape=negatives)")
        p, completions = _wrap(prompt, unsafe, opts["format"])
        return [{"prompt": p, "rejected": completions}]
    key = f"{shape}_response_id"
    winner = _get(row, key, err, int)
    if winner not in (0, 1):
        raise err(key, f"must be 0 or 1, got {winner!r}")
    if replies[0] == replies[1]:
        raise SkipRow("identical replies")
    p, (chosen, rejected) = _wrap(prompt, [replies[winner], replies[1 - winner]], opts["format"])
    return [{"prompt": p, "chosen": chosen, "rejected": rejected}]


GSM8K_FINAL = re.compile(r"\n####\s*(.+?)\s*$")


def gsm8k_final_answer(answer: str) -> str | None:
    """The text after GSM8K's closing ``#### `` marker (e.g. ``"18"``), as written; None without one."""
    match = GSM8K_FINAL.search(answer)
    return match.group(1) if match else None


def gsm8k_rows(row: dict, opts: dict, err) -> list[dict]:
    """openai/gsm8k (``main``/``socratic``): question, worked answer ending in ``#### N``.

    Returns a QA row (the whole worked answer is the training target) plus ``final_answer``, the
    ``N`` after ``####`` exactly as written (commas included), for a verifier to compare against.
    """
    question, answer = _get(row, "question", err), _get(row, "answer", err)
    final = gsm8k_final_answer(answer)
    if final is None:
        raise err(
            "answer", f"has no final line `#### N` to take the final answer from: {short_repr(answer[-60:])}"
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


def sdpo_rows(row: dict, opts: dict, err) -> list[dict]:
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
            "trueSelection", f"{short_repr(target)} is not one of the {len(items)} candidates of `itemList`"
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
