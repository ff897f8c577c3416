"""AltPO's alternate answers: the request, the post-processing, the counts and the alternates file.

Spec ``methods-unlearning-2.md`` §7(b): per forget question one request whose user turn holds the
question, its answer and an instruction (alignkit's own text, configurable, stored with the data),
rendered through the run's ``PromptFormat`` (the model's chat template when it has one), with the
assistant turn pre-filled with an answer tag. Each of the K completions is cut at the first stop string
and stripped; one row per sample ``{question, answer, alternate}``, K consecutive rows per question,
keyed by row index. Nothing is filtered unless the user asks (``drop_alternates``): the counts of
empty, identical-to-the-answer and length-limited alternates are reported either way.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from alignkit.data.records import PreferenceRecord, RecordError, normalize_record
from alignkit.trainers.self_samples import SelfSamples

logger = logging.getLogger(__name__)

# alignkit's own wording (the spec asks not to embed the upstream prompt strings).
DEFAULT_INSTRUCTION = (
    "Below is a question with its answer.\n\n"
    "Question: {question}\n"
    "Answer: {answer}\n\n"
    "Write one different answer to the same question. Keep every detail the question itself states, "
    "but replace the facts the answer adds with other plausible ones. Reply with the new answer only."
)
DEFAULT_ANSWER_TAG = "New answer:"
DEFAULT_STOP_STRINGS = ("Question:", "Question: ", "Q: ", "Q:")  # spec §7(b)
DROP_KINDS = ("empty", "identical", "truncated")
RUN_FILE = "altpo_alternates.json"  # in the run folder and in every checkpoint
FORMAT = "alignkit-altpo-alternates"


@dataclass
class ForgetQA:
    """A forget row as given, and the question/answer texts a request quotes."""

    row: dict
    question: str
    answer: str


def _text(value, role: str | None = None) -> str:
    if isinstance(value, str):
        return value
    messages = [m for m in value if role is None or m["role"] == role] or value
    return messages[-1]["content"]


def forget_questions(data, *, on_invalid: str, source: str = "train_dataset") -> list[ForgetQA]:
    """The forget rows (question/answer, prompt/completion or messages); a bad row names itself in one line."""
    out, skipped = [], []
    for i, row in enumerate(data):
        try:
            row = dict(row)
            record = normalize_record(row, index=i, source=source)
            if record.roles != ["answer"]:
                raise RecordError(
                    source,
                    i,
                    "/".join(record.roles),
                    "AltPO needs one answer per row (question/answer, prompt/completion or messages)",
                )
            if record.prompt == "":
                raise RecordError(
                    source, i, "text", "AltPO needs a question to write alternates for; raw text has none"
                )
            out.append(ForgetQA(row, _text(record.prompt, "user"), _text(record.completions[0])))
        except RecordError as error:
            if on_invalid == "raise":
                raise
            skipped.append(str(error))
    if skipped:
        logger.warning("%s: skipped %d invalid row(s); first: %s", source, len(skipped), skipped[0])
    if not out:
        raise ValueError(f"{source}: no usable forget row (each needs a question and an answer).")
    return out


def request_ids(collator, qa: ForgetQA, instruction: str, answer_tag: str, index: int) -> list[int]:
    """Token ids of one generation request: the rendered user turn, then the answer tag (pre-filled)."""
    request = instruction.format(question=qa.question, answer=qa.answer)
    ids = collator.encode_prompt(
        PreferenceRecord(request, [], [], is_qa=True), index=index, source="altpo request"
    )
    return ids + list(collator.tokenizer(answer_tag, add_special_tokens=False)["input_ids"])


def cut_at_stop(text: str, stop_strings) -> str:
    """``text`` up to the first occurrence of any stop string, stripped (spec §7(b))."""
    cut = min((i for s in stop_strings if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut].strip()


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def kinds_of(alternate: str, answer: str, hit_limit: bool) -> list[str]:
    """Which of :data:`DROP_KINDS` an alternate is."""
    return [
        kind
        for kind, flagged in zip(DROP_KINDS, (not alternate.strip(), _same(alternate, answer), hit_limit))
        if flagged
    ]


def post_process(
    qas: list[ForgetQA], completions, *, stop_strings, drop, hit_limit
) -> tuple[list[list[str]], dict[str, int]]:
    """Each question's alternates, cut at the first stop string and stripped, less the ``drop`` kinds,
    and the counts of each kind. ``hit_limit(raw_text) -> bool`` says whether a completion used all of
    ``max_new_tokens``."""
    counts = dict.fromkeys((*DROP_KINDS, "dropped", "kept"), 0)
    kept = []
    for qa, samples in zip(qas, completions):
        mine = []
        for raw in samples:
            alternate = cut_at_stop(raw, stop_strings)
            kinds = kinds_of(alternate, qa.answer, hit_limit(raw))
            for kind in kinds:
                counts[kind] += 1
            if set(kinds) & set(drop):
                counts["dropped"] += 1
                continue
            mine.append(alternate)
        counts["kept"] += len(mine)
        kept.append(mine)
    return kept, counts


def rows_of(qas: list[ForgetQA], alternates: list[list[str]]) -> list[dict]:
    """One training row per alternate, K consecutive rows per question."""
    return [
        {"forget_index": q, "question": qa.question, "answer": qa.answer, "alternate": alternate}
        for q, (qa, mine) in enumerate(zip(qas, alternates))
        for alternate in mine
    ]


def build_rows(
    qas: list[ForgetQA], completions, *, stop_strings, drop, hit_limit
) -> tuple[list[dict], dict[str, int]]:
    """:func:`post_process` as training rows (:func:`rows_of`)."""
    kept, counts = post_process(qas, completions, stop_strings=stop_strings, drop=drop, hit_limit=hit_limit)
    return rows_of(qas, kept), counts


class AlternatesStore:
    """The alternates' run file (``altpo_alternates.json``) as the self-sample step's store: in the run
    folder and every checkpoint, readable as ``alternates_file`` too."""

    name = RUN_FILE.removesuffix(".json")
    method = "AltPO"

    def __init__(self, qas: list[ForgetQA]):
        self.qas = qas

    def read(self, output_dir: str, key: str, newest_checkpoint=None):
        for folder in (output_dir, newest_checkpoint):
            if folder is None:
                continue
            path = os.path.join(folder, RUN_FILE)
            stored = read_run_file(path)
            if stored is None:
                continue
            if stored["key"] != key:
                raise ValueError(
                    f"{path} holds AltPO alternates made for other weights, data or settings; use a new "
                    "output_dir, pass that file as alternates_file to train on it, or delete it to generate anew."
                )
            alternates: list[list[str]] = [[] for _ in self.qas]
            for row in stored["rows"]:
                alternates[row["forget_index"]].append(row["alternate"])
            return SelfSamples(alternates, [[] for _ in alternates], {**stored["meta"], "key": key})
        return None

    def write(self, folder: str, samples) -> None:
        meta = {k: v for k, v in samples.meta.items() if k != "key"}
        write_run_file(
            os.path.join(folder, RUN_FILE), samples.meta["key"], rows_of(self.qas, samples.completions), meta
        )


# --------------------------------------------------------------------------- files
def write_run_file(path: str | os.PathLike, key: str, rows: list[dict], meta: dict) -> None:
    """The alternates a run trains on (atomic): ``{format, key, meta, rows}``, rows keyed by their index."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    indexed = [{"index": i, **row} for i, row in enumerate(rows)]
    tmp.write_text(
        json.dumps({"format": FORMAT, "v": 1, "key": key, "meta": meta, "rows": indexed}, indent=1)
    )
    os.replace(tmp, path)


def read_run_file(path: str | os.PathLike) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not an alignkit AltPO alternates file; move it away or use another output_dir."
        )
    for row in stored["rows"]:
        row.pop("index", None)
    return stored


def read_alternates_file(path: str) -> list[dict]:
    """A user's alternates: a JSON list of ``{question, answer, alternate}`` objects (open-unlearning's
    ``alt5_seed_0.json``), JSON lines of them, or alignkit's own run file. Errors name the row and field."""
    name = f"alternates_file {path}"
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{name}: no such file; pass a JSON list of {{question, answer, alternate}} rows.")
    text = file.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{name}, line {number}: not JSON ({error.msg}); expected a JSON list or JSON lines."
                ) from None
    if isinstance(rows, dict) and rows.get("format") == FORMAT:
        rows = rows["rows"]
    if not isinstance(rows, list) or not rows:
        raise ValueError(
            f"{name}: expected a non-empty JSON list of {{question, answer, alternate}} objects."
        )
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RecordError(
                name,
                i,
                "<row>",
                f"must be an object with question/answer/alternate, got {type(row).__name__}",
            )
        for field_name in ("question", "answer", "alternate"):
            value = row.get(field_name)
            if value is None:
                raise RecordError(name, i, field_name, f"is missing; the row has fields {sorted(row)}")
            if not isinstance(value, str):
                raise RecordError(name, i, field_name, f"must be text, got {type(value).__name__}")
        out.append({k: row[k] for k in ("question", "answer", "alternate")})
    return out


def match_rows(file_rows: list[dict], qas: list[ForgetQA], path: str) -> list[dict]:
    """The file's alternates of each forget question, in forget order; a question without one is an error."""

    def key(question: str, answer: str) -> tuple[str, str]:
        return " ".join(question.split()), " ".join(answer.split())

    first: dict[tuple[str, str], int] = {}  # a repeated forget row shares its first copy's alternates
    for q, qa in enumerate(qas):
        first.setdefault(key(qa.question, qa.answer), q)
    by_question: dict[int, list[dict]] = {}
    unmatched = 0
    for row in file_rows:
        q = first.get(key(row["question"], row["answer"]))
        if q is None:
            unmatched += 1
            continue
        by_question.setdefault(q, []).append({"forget_index": q, **row})
    if unmatched:
        logger.warning(
            "alternates_file %s: %d of %d rows are for questions outside the forget set; ignored.",
            path,
            unmatched,
            len(file_rows),
        )
    missing = [q for q, qa in enumerate(qas) if first[key(qa.question, qa.answer)] not in by_question]
    if missing:
        q = missing[0]
        raise ValueError(
            f"alternates_file {path}: forget row {q} (question {qas[q].question[:60]!r}) has no alternate "
            f"({len(missing)} such rows); add rows with its exact question and answer, or drop alternates_file "
            "to generate them."
        )
    used = [row for q in sorted(by_question) for row in by_question[q]]
    if not any(row["alternate"].strip() for row in used):  # a broken file, not a draw that went badly
        raise ValueError(
            f"alternates_file {path}: all {len(used)} alternates of the forget set are empty, so AltPO would "
            "train every forget question toward an empty answer; fill in the `alternate` fields, or drop "
            "alternates_file to generate them."
        )
    return used
