"""Normalise every accepted record shape into one canonical ``PreferenceRecord``.

Accepted shapes, each in standard (plain text) or conversational (list of role/content messages)
form:

===================  ============================================  ===========================
shape                fields                                        roles of the completions
===================  ============================================  ===========================
pairwise (TRL)       ``prompt``, ``chosen``, ``rejected``          chosen, rejected
implicit prompt      ``chosen``, ``rejected`` as whole dialogues   chosen, rejected (the prompt
(TRL, HH-RLHF)       sharing the prompt (no ``prompt`` field)      is their shared prefix, split
                                                                   by TRL's ``extract_prompt``)
1-vs-N (S-DPO)       ``prompt``, ``chosen``, ``rejected`` (list)   chosen, rejected x N
ranked / graded      ``prompt``, ``completions`` + ``scores``      ranked x K (kept as given,
                     (floats, higher is better), ``ranks``         ``score_kind`` says which)
                     (integers >= 1, 1 = best, ties ok) or
                     ``labels`` (graded, in [0, 1])
negatives only       ``prompt``, ``rejected`` (one or a list)      rejected x N
QA (TOFU)            ``question``, ``answer``                      answer
prompt-completion    ``prompt``, ``completion`` [+ ``label``]      answer (chosen/rejected by
                                                                   a boolean ``label``)
messages             ``messages`` (last turn = assistant)          answer
raw text (MUSE)      ``text``                                      answer, empty prompt
===================  ============================================  ===========================

A conversational completion is the list of messages that follows the prompt (usually one
assistant message). Every malformed row raises ``ValueError`` naming the dataset, the row index
and the field.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from alignkit.errors import UserError

ROLES = ("chosen", "rejected", "answer", "ranked", "sample")
ROLE_IDS = {name: i for i, name in enumerate(ROLES)}
MESSAGE_ROLES = ("system", "user", "assistant", "tool")

Text = str | list[dict]


@dataclass
class PreferenceRecord:
    """One prompt with K completions.

    ``scores`` holds the values the data gave, unchanged, and ``score_kind`` what they are:
    ``"scores"`` (higher is better), ``"ranks"`` (1 = best) or ``"labels"`` (graded, in [0, 1]);
    both are None when the data carries none. A method that needs one kind converts explicitly
    (e.g. LiPO's ``labels_from_ranks``), so no value is reinterpreted silently.
    """

    prompt: Text
    completions: list[Text]
    roles: list[str]
    scores: list[float] | None = None
    score_kind: str | None = None  # "scores" | "ranks" | "labels"
    is_qa: bool = False  # question/answer rows: the prompt goes through a PromptFormat
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


class RecordError(UserError):
    """A malformed input row; the message names the dataset, the row and the field."""

    def __init__(self, source: str, index: int, field_name: str, problem: str):
        super().__init__(f"{source}, row {index}, field `{field_name}`: {problem}")
        self.source, self.index, self.field = source, index, field_name


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(m, dict) for m in value)


def _check_text(value: Any, err, name: str, *, allow_empty: bool = False) -> Text:
    if value is None:
        raise err(name, "is missing (None)")
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            raise err(name, "is empty")
        return value
    if _is_messages(value):
        for j, message in enumerate(value):
            role, content = message.get("role"), message.get("content")
            if role not in MESSAGE_ROLES:
                raise err(f"{name}[{j}].role", f"unknown role {role!r}; expected one of {MESSAGE_ROLES}")
            if content is None:
                raise err(f"{name}[{j}].content", "is missing")
            if not isinstance(content, str):
                raise err(
                    f"{name}[{j}].content", f"must be a string, got {type(content).__name__} {content!r}"
                )
            if not content.strip():
                raise err(f"{name}[{j}].content", "is empty")
        return value
    if isinstance(value, list) and not value:
        raise err(name, "is an empty list")
    raise err(name, f"must be a string or a list of role/content messages, got {type(value).__name__}")


def _check_plain(value: Any, err, name: str) -> str:
    """A field that only has a plain-text form (QA and raw-text rows)."""
    text = _check_text(value, err, name)
    if not isinstance(text, str):
        raise err(name, "must be a string; put conversations in `prompt`/`messages` rows")
    return text


def _completion_list(value: Any, err, name: str) -> list[Text]:
    """A single completion or a list of them (a list of strings or of message lists)."""
    if isinstance(value, list) and value and not _is_messages(value):
        return [_check_text(v, err, f"{name}[{j}]") for j, v in enumerate(value)]
    if isinstance(value, list) and not value:
        raise err(name, "is an empty list")
    return [_check_text(value, err, name)]


def _check_scores(values: Any, k: int, err, name: str) -> list[float]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise err(name, f"must be a list of numbers, got {type(values).__name__}")
    if len(values) != k:
        raise err(name, f"has {len(values)} entries but there are {k} completions")
    out = []
    for j, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
            raise err(f"{name}[{j}]", f"must be a finite number, got {v!r}")
        out.append(float(v))
    return out


# The fields of each record shape; ``prompt`` is shared by the last three. A row whose fields belong
# to two shapes is ambiguous (which completions would be trained on?), so it is an error.
SHAPE_FIELDS = {
    "question/answer": ("question", "answer"),
    "messages": ("messages",),
    "text": ("text",),
    "chosen/rejected": ("chosen", "rejected"),
    "completions/scores": ("completions", "scores", "ranks", "labels"),
    "completion/label": ("completion", "label"),
}
PROMPTLESS_FIELDS = ("question", "answer", "messages", "text")
# Fields carried along unchanged into ``PreferenceRecord.extra`` (no shape reads them): GSM8K's
# ``final_answer`` (alignkit.data.presets) is what a verifier compares a generation against.
EXTRA_FIELDS = ("final_answer",)
KNOWN_FIELDS = frozenset(["prompt", *EXTRA_FIELDS, *(f for fields in SHAPE_FIELDS.values() for f in fields)])


def _close_field(key: str) -> str | None:
    """The known field ``key`` is probably a misspelling of (``choosen`` -> ``chosen``), if any."""
    close = difflib.get_close_matches(key, KNOWN_FIELDS, n=1, cutoff=0.75)
    return close[0] if close else None


def unknown_fields(keys) -> list[str]:
    """Fields no record shape reads (the caller warns once per dataset that they are ignored).

    Misspellings of a known field are left out: a row holding one is an error naming it (see
    :func:`_check_fields`), and "ignoring `choosen`" just before that error contradicted it.
    """
    return sorted(k for k in keys if k not in KNOWN_FIELDS and _close_field(k) is None)


def _check_fields(keys: set[str], err) -> None:
    """Reject misspelled fields and rows whose fields mix two record shapes, naming the fields."""
    for key in keys:
        if not isinstance(key, str):
            raise err(repr(key), "field names must be strings")
    for key in sorted(keys - KNOWN_FIELDS):
        close = _close_field(key)
        if close and close not in keys:
            raise err(key, f"is not a known field; did you mean `{close}`? Rename it")
    present = [[f for f in fields if f in keys] for fields in SHAPE_FIELDS.values()]
    present = [fields for fields in present if fields]
    if "prompt" in keys and present and all(fields[0] in PROMPTLESS_FIELDS for fields in present):
        present.append(["prompt"])  # e.g. `question` + `prompt`: which one is the prompt?
    if len(present) > 1:
        described = " and ".join("/".join(f"`{f}`" for f in fields) for fields in present)
        raise err(
            "/".join(f for fields in present for f in fields),
            f"the row has {described}, which belong to different record shapes; keep the fields of "
            "one shape (e.g. `dataset.remove_columns([...])`)",
        )
    if "label" in keys and "completion" not in keys:
        raise err("label", "only applies to a `completion` row; this row has no `completion`")
    for modifier in ("scores", "ranks", "labels"):
        if modifier in keys and "completions" not in keys:
            raise err(modifier, "only applies to a `completions` list; this row has no `completions`")


def _check_ranks(values: Any, k: int, err) -> list[float]:
    """Ranks are whole numbers >= 1 (1 = best, ties allowed); 0, negative or fractional ranks are refused."""
    ranks = _check_scores(values, k, err, "ranks")
    for j, r in enumerate(ranks):
        if r < 1 or r != int(r):
            raise err(f"ranks[{j}]", f"must be a whole number >= 1 (1 = best), got {values[j]!r}")
    return ranks


def _check_labels(values: Any, k: int, err) -> list[float]:
    labels = _check_scores(values, k, err, "labels")
    for j, v in enumerate(labels):
        if not 0.0 <= v <= 1.0:
            raise err(
                f"labels[{j}]", f"must be in [0, 1] (graded labels, higher is better), got {values[j]!r}"
            )
    return labels


def _is_single(value: Any) -> bool:
    """One completion (a string or one conversation), not a list of them (a 1-vs-N row)."""
    return isinstance(value, str) or _is_messages(value)


def split_implicit_prompt(row: dict, err) -> dict:
    """TRL's implicit-prompt form: ``chosen``/``rejected`` as whole dialogues sharing the prompt.

    Uses TRL's own ``maybe_extract_prompt`` (the rule ``DPOTrainer`` applies, so a file gives the
    same prompt and completions here as in TRL): when there is no ``prompt`` field, or a plain-text
    one beside conversational dialogues (ultrafeedback_binarized's layout), the prompt is the longest
    common prefix of the two dialogues (characters, or whole messages), less a trailing space. A
    row with a ``prompt`` of the same form is returned unchanged.
    """
    prompt = row.get("prompt")
    if prompt is not None and (_is_messages(prompt) or not _is_messages(row["chosen"])):
        # An explicit prompt of the same form (TRL's test too), or a mix no dialogue explains
        # (the shape checks name it): nothing implicit.
        return row
    chosen = _check_text(row["chosen"], err, "chosen")
    rejected = _check_text(row["rejected"], err, "rejected")
    if isinstance(chosen, list) != isinstance(rejected, list):
        raise err("rejected", "mixes conversational and plain-text formats with `chosen`")
    from trl.data_utils import maybe_extract_prompt

    split = maybe_extract_prompt(dict(row))
    if chosen == rejected:
        raise err("rejected", "is identical to `chosen`, so no prompt/completion split exists; drop the row")
    shorter = min(len(chosen), len(rejected))
    if chosen[:shorter] == rejected[:shorter]:
        # TRL's loop then finds no differing position and cuts one character/message short of the
        # shorter dialogue, leaving a meaningless split; refuse it instead.
        raise err(
            "chosen" if len(chosen) == shorter else "rejected",
            "is a prefix of the other dialogue, so the implicit prompt cannot be separated from the "
            "completions; add a `prompt` field",
        )
    if not split["prompt"] or (isinstance(split["prompt"], str) and not split["prompt"].strip()):
        raise err(
            "prompt",
            "is missing and `chosen`/`rejected` share no prefix to extract it from (TRL's implicit-prompt "
            "rule); add a `prompt` field",
        )
    for name in ("chosen", "rejected"):
        if isinstance(split[name], str) and not split[name].strip():
            raise err(name, "is empty once the shared prefix (the implicit prompt) is removed")
    return {**{k: v for k, v in row.items() if k != "prompt"}, **split}


def normalize_record(row: dict, *, index: int, source: str = "dataset") -> PreferenceRecord:
    """Turn one input row of any accepted shape into a ``PreferenceRecord``."""

    def err(field_name: str, problem: str) -> RecordError:
        return RecordError(source, index, field_name, problem)

    if not isinstance(row, dict):
        raise RecordError(source, index, "<row>", f"must be a mapping, got {type(row).__name__}")
    keys = {k for k, v in row.items() if v is not None}
    _check_fields(keys, err)

    if "question" in keys or ("answer" in keys and "prompt" not in keys):
        question = _check_plain(row.get("question"), err, "question")
        answer = _check_plain(row.get("answer"), err, "answer")
        extra = {k: row[k] for k in EXTRA_FIELDS if k in keys}
        return PreferenceRecord(question, [answer], ["answer"], is_qa=True, extra=extra)

    if "messages" in keys:
        messages = _check_text(row["messages"], err, "messages")
        if isinstance(messages, str) or messages[-1]["role"] != "assistant":
            raise err("messages", "must be a conversation whose last message is from the assistant")
        if len(messages) < 2:
            raise err("messages", "needs at least one message before the final assistant turn")
        return PreferenceRecord(messages[:-1], [messages[-1:]], ["answer"])

    if "text" in keys and "prompt" not in keys:
        return PreferenceRecord("", [_check_plain(row["text"], err, "text")], ["answer"])

    if "chosen" in keys and "rejected" in keys and _is_single(row["rejected"]):
        row = split_implicit_prompt(row, err)
        keys = {k for k, v in row.items() if v is not None}
    if "prompt" not in keys:
        raise err("prompt", f"is missing; the row has fields {sorted(row)}")
    prompt = _check_text(row["prompt"], err, "prompt")

    if "completions" in keys:
        completions = _completion_list(row["completions"], err, "completions")
        k = len(completions)
        given = [name for name in ("scores", "ranks", "labels") if name in keys]
        if len(given) > 1:
            raise err(given[1], f"conflicts with `{given[0]}`: give one of `scores`, `ranks` or `labels`")
        if not given:
            raise err(
                "scores",
                "is missing: a list of completions needs `scores` (higher is better), `ranks` (1 = best) "
                "or `labels` (in [0, 1])",
            )
        kind = given[0]
        if kind == "ranks":
            values = _check_ranks(row[kind], k, err)
        elif kind == "labels":
            values = _check_labels(row[kind], k, err)
        else:
            values = _check_scores(row[kind], k, err, "scores")
        record = PreferenceRecord(prompt, completions, ["ranked"] * k, values, score_kind=kind)
    elif "chosen" in keys or "rejected" in keys:
        chosen = [_check_text(row["chosen"], err, "chosen")] if "chosen" in keys else []
        if "rejected" not in keys:
            raise err("rejected", "is missing (a row with `chosen` needs `rejected`)")
        rejected = _completion_list(row["rejected"], err, "rejected")
        record = PreferenceRecord(
            prompt, chosen + rejected, ["chosen"] * len(chosen) + ["rejected"] * len(rejected)
        )
    elif "completion" in keys:
        completion = _check_text(row["completion"], err, "completion")
        role = "answer"
        if "label" in keys:
            if not isinstance(row["label"], bool):
                raise err("label", f"must be a boolean, got {row['label']!r}")
            role = "chosen" if row["label"] else "rejected"
        record = PreferenceRecord(prompt, [completion], [role])
    else:
        raise err(
            "completions",
            "no completion field found: expected one of `chosen`/`rejected`, "
            "`completions`, `completion`, or `question`/`answer`",
        )

    conversational = isinstance(prompt, list)
    for j, completion in enumerate(record.completions):
        if isinstance(completion, list) != conversational:
            raise err(f"completions[{j}]", "mixes conversational and plain-text formats with the prompt")
    return record
