"""TOFU evaluation runner: Forget Quality, Model Utility and every metric under them.

Flow (``shared/design/benchmarks.md`` §2): read the four eval files, build the prompts with one
:class:`~alignkit.data.prompt_format.PromptFormat`, score every (prompt, answer) pair once through a
cache keyed by ``(task, prompt, target)`` (all paraphrased and perturbed answers of a task go
through one batched call), generate greedy answers in batches with a KV cache, then compute the
registered metrics of :mod:`alignkit.eval.metrics` from the cached values. The logs follow
open-unlearning's ``TOFU_EVAL.json`` layout and names, so its published retain-model logs work as
the Forget Quality reference, and alignkit's own logs work the same way.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.data.prompt_format import PromptFormat
from alignkit.errors import UserError
from alignkit.eval import metrics as M
from alignkit.eval.loading import load_model, load_tokenizer, model_name
from alignkit.eval.logs import META_KEY, agg_values, read_eval_log, summarize
from alignkit.eval.logs import TOFU_EVAL_FILE as EVAL_FILE
from alignkit.eval.logs import TOFU_REPORT_FILE as REPORT_FILE
from alignkit.eval.logs import TOFU_SUMMARY_FILE as SUMMARY_FILE
from alignkit.eval.memorization import memorization_logs
from alignkit.eval.progress import StageProgress
from alignkit.eval.protocols import TofuProtocol, get_protocol
from alignkit.eval.report import tofu_markdown
from alignkit.eval.scoring import (
    ScoredText,
    decode_generations,
    encode_for_scoring,
    generate_token_ids,
    score_token_ids,
)
from alignkit.eval.tofu_data import DEFAULT_DATA, TofuTask, load_task, task_specs
from alignkit.eval.tofu_mia import holdout_split_for, load_holdout, mia_min_k, privleak_entry

logger = logging.getLogger(__name__)


# open-unlearning's system prompt and pinned date for chat models (configs/model/*.yaml, §1.4).
OU_CHAT_FORMAT = PromptFormat(
    mode="chat", system_prompt="You are a helpful assistant.", date_string="10 Apr 2025"
)


def resolve_prompt_format(prompt_format: PromptFormat | str | None, tokenizer) -> PromptFormat:
    """``None``/``"auto"``: the tokenizer's chat template if it has one, else ``qa_plain`` (alignkit's
    training default); ``"ou_chat"``: chat with open-unlearning's system prompt and date; any other
    string is a :meth:`PromptFormat.preset`."""
    if prompt_format is None or prompt_format == "auto":
        return PromptFormat.for_tokenizer(tokenizer)
    if prompt_format == "ou_chat":
        return OU_CHAT_FORMAT
    if isinstance(prompt_format, str):
        return PromptFormat.preset(prompt_format)
    return prompt_format


@dataclass
class TofuResult:
    """What :func:`evaluate_tofu` returns.

    ``logs``: open-unlearning-compatible ``{metric: {"agg_value", "value_by_index"}}`` plus the run
    metadata under ``"alignkit"``. ``summary``: flat ``{name: value}`` with ``forget_quality``,
    ``model_utility``, ``forget_rouge``, ``forget_prob``, ``forget_truth_ratio`` and the 9 Model
    Utility components (open-unlearning names). ``timings``: seconds per phase. ``stats``: forward
    and cache counters.
    """

    logs: dict
    summary: dict
    timings: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def meta(self) -> dict:
        return self.logs.get(META_KEY, {})

    def save(self, output_dir: str | Path) -> Path:
        """Write ``TOFU_EVAL.json``, ``TOFU_SUMMARY.json`` (metric → agg_value) and ``TOFU_REPORT.md``."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / EVAL_FILE).write_text(json.dumps(_jsonable(self.logs), indent=2, sort_keys=False))
        (out / SUMMARY_FILE).write_text(json.dumps(_jsonable(agg_values(self.logs)), indent=2))
        (out / REPORT_FILE).write_text(tofu_markdown(self))
        return out

    @classmethod
    def load(cls, path: str | Path) -> TofuResult:
        """Read a run folder (or its ``TOFU_EVAL.json``) back."""
        p = Path(path)
        logs = read_eval_log(p)
        return cls(logs=logs, summary=summarize(logs), timings=logs.get(META_KEY, {}).get("timings", {}))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return _jsonable(x.item())
    return x


# ------------------------------------------------------------------------------------ encodings


@dataclass
class _Encoder:
    """Turns (question, answer) into prompt/target texts and ids the way the protocol says."""

    tokenizer: object
    fmt: PromptFormat
    protocol: TofuProtocol

    @property
    def chat(self) -> bool:
        return self.fmt.mode == "chat"

    @property
    def add_special_tokens(self) -> bool:
        return not self.chat  # a chat template writes its own BOS

    @property
    def max_length(self) -> int | None:
        return None if (self.chat and not self.protocol.truncate_chat) else self.protocol.max_length

    def __post_init__(self):
        self._prompts: dict[str, str] = {}
        # Each text is tokenised once: a question's prompt is shared by up to 7 targets and by its
        # generation prompt and ROUGE reference, and an answer's scoring pair by its ROUGE reference.
        self._token_ids: dict[tuple[str, bool], list[int]] = {}

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        key = (text, add_special_tokens)
        ids = self._token_ids.get(key)
        if ids is None:
            ids = self._token_ids[key] = list(
                self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
            )
        return list(ids)  # a copy: callers append EOS

    def pretokenize(self, pairs: list[tuple[str, str]]) -> None:
        """Tokenise the texts :meth:`encode` will ask for, in one batched tokenizer call."""
        special = self.add_special_tokens
        if self.protocol.boundary == "joint":
            wanted = [(t, special) for p, c in pairs for t in (p, p + c)]
        else:
            wanted = [x for p, c in pairs for x in ((p, special), (c, False))]
        for flag in (True, False):
            texts = list(dict.fromkeys(t for t, f in wanted if f is flag and (t, f) not in self._token_ids))
            if texts:
                ids = self.tokenizer(texts, add_special_tokens=flag)["input_ids"]
                self._token_ids.update(((t, flag), list(i)) for t, i in zip(texts, ids))

    def full_prompt(self, question: str) -> str:
        # Rendered once per question: chat templates are Jinja and each question has up to 7 targets.
        if question not in self._prompts:
            self._prompts[question] = self.fmt.render_prompt(self.tokenizer, question)
        return self._prompts[question]

    def score_prompt(self, question: str) -> str:
        p = self.full_prompt(question)
        if not self.chat and not self.protocol.answer_tag_in_prompt and self.fmt.asst_start:
            p = p[: -len(self.fmt.asst_start)]
        return p

    def score_target(self, question: str, answer: str) -> str:
        if self.chat:
            # open-unlearning scores the template's end-of-turn tokens too: the target is the whole
            # rendered conversation minus the rendered prompt.
            prompt = self.full_prompt(question)
            full = self.fmt.render_messages(
                self.tokenizer,
                [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                add_generation_prompt=False,
            )
            if full.startswith(prompt):
                return full[len(prompt) :]
            logger.warning(
                "chat template: the prompt is not a prefix of the full chat; scoring the answer text only"
            )
            return answer
        if not self.protocol.answer_tag_in_prompt:
            return self.fmt.asst_start + answer
        return answer

    def encode(self, prompt: str, target: str) -> tuple[list[int], list[int]]:
        return encode_for_scoring(
            self.tokenizer,
            prompt,
            target,
            boundary=self.protocol.boundary,
            add_eos=True,
            add_special_tokens=self.add_special_tokens,
            max_length=self.max_length,
            max_length_includes_eos=self.protocol.max_length_includes_eos,
            encode=self._encode,
        )

    def generation_prompt_ids(self, question: str) -> list[int]:
        text = self.score_prompt(question)  # orig's phi path generates without the answer tag
        ids = self._encode(text, self.add_special_tokens)
        return ids[: self.max_length] if self.max_length else ids

    def rouge_reference(self, question: str, answer: str) -> str:
        """open-unlearning's ROUGE reference: the whole answer, whatever the tokenizer merges at the boundary.

        OU generates from the prompt tokenised alone and keeps the whole ``prompt + answer`` sequence as
        the labels (``predict_with_generate``); ``eval_text_similarity`` decodes both and removes the
        prompt's text from the full text. So the reference is ``decode(ids(prompt + answer))`` with
        ``decode(ids(prompt))`` removed, stripped. Slicing ``ids(prompt + answer)`` at
        ``len(ids(prompt))`` instead would lose the first answer token whenever the prompt's trailing
        space merges into it (``"Answer: 1472"`` -> ``"72"``), as the scored labels of the joint
        boundary do on purpose; ROUGE does not.
        """
        prompt = self.full_prompt(question)
        p, t = encode_for_scoring(
            self.tokenizer,
            prompt,
            self.score_target(question, answer) if self.chat else answer,
            boundary=self.protocol.boundary,
            add_eos=True,
            add_special_tokens=self.add_special_tokens,
            max_length=self.max_length,
            max_length_includes_eos=self.protocol.max_length_includes_eos,
            encode=self._encode,
        )
        prompt_ids = self._encode(prompt, self.add_special_tokens)
        if self.max_length:
            prompt_ids = prompt_ids[: self.max_length]
        dec = self.tokenizer.decode
        kw = {"skip_special_tokens": True}  # no space clean-up: see scoring.decode_generations
        return dec(p + t, **kw).replace(dec(prompt_ids, **kw), "").strip()


class ScoreCache:
    """Scores of one model keyed by ``(task, prompt, target)``; each key is run through the model once.

    ``stats``: ``requested`` pairs, ``unique_requested`` (distinct keys), ``cache_hits``,
    ``forwards`` (model calls) and ``sequences`` (rows run; equals ``unique_requested`` unless two
    different texts tokenise identically).
    """

    def __init__(self, model, encoder: _Encoder, *, batch_size: int):
        self.model, self.encoder, self.batch_size = model, encoder, batch_size
        self.store: dict[tuple[str, str, str], ScoredText] = {}
        self.stats = {"requested": 0, "unique_requested": 0, "cache_hits": 0, "forwards": 0, "sequences": 0}
        self._seen: set[tuple[str, str, str]] = set()

    def score(
        self,
        keys: list[tuple[str, str, str]],
        progress: Callable[[int], None] | None = None,
        argmax: set[tuple[str, str, str]] = frozenset(),
    ) -> list[ScoredText]:
        """Scores of ``keys``; those in ``argmax`` also with their argmax predictions (rescored if
        an earlier call kept none)."""
        self.stats["requested"] += len(keys)
        self._seen.update(keys)
        self.stats["unique_requested"] = len(self._seen)
        missing = list(
            dict.fromkeys(
                k
                for k in keys
                if k not in self.store
                or (k in argmax and self.store[k].valid and self.store[k].argmax_ids is None)
            )
        )
        self.stats["cache_hits"] += len(keys) - len(missing)
        if progress is not None and len(keys) > len(missing):
            progress(len(keys) - len(missing))  # cached pairs are done already
        if missing:
            self.encoder.pretokenize([(prompt, target) for _, prompt, target in missing])
            pairs = [self.encoder.encode(prompt, target) for _, prompt, target in missing]
            tok = self.encoder.tokenizer
            pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
            scored = score_token_ids(
                self.model,
                pairs,
                pad_token_id=pad,
                batch_size=self.batch_size,
                progress=progress,
                stats=self.stats,
                argmax=[k in argmax for k in missing],
            )
            self.store.update(zip(missing, scored))
        return [self.store[k] for k in keys]


def _loss(s: ScoredText) -> float | None:
    return s.avg_loss if s.valid else None


def _task_losses(
    task: TofuTask,
    cache: ScoreCache,
    enc: _Encoder,
    *,
    what: tuple[str, ...],
    progress,
    answer_argmax: bool = False,
) -> dict:
    """Average losses per index of the answer / correct / wrong answers, in one batched scoring call
    (``answer_argmax``: the answers' scores keep their argmax predictions, for the memorisation metrics)."""
    key = task.spec.key
    keys, slots = [], []
    for it in task.items:
        prompt = enc.score_prompt(it.question)
        if "answer" in what:
            keys.append((key, prompt, enc.score_target(it.question, it.answer)))
            slots.append((it.index, "answer"))
        if "correct" in what:
            keys.append((key, prompt, enc.score_target(it.question, it.correct)))
            slots.append((it.index, "correct"))
        if "wrong" in what:
            for w in it.wrong:
                keys.append((key, prompt, enc.score_target(it.question, w)))
                slots.append((it.index, "wrong"))
    argmax = {k for k, (_, kind) in zip(keys, slots) if kind == "answer"} if answer_argmax else frozenset()
    scored = cache.score(keys, progress=progress, argmax=argmax)
    out: dict[str, dict] = {w: {} for w in what}
    for (idx, kind), s in zip(slots, scored):
        if kind == "wrong":
            out["wrong"].setdefault(str(idx), []).append(_loss(s))
        else:
            out[kind][str(idx)] = _loss(s)
    if "wrong" in out:  # an item with any invalid wrong answer is invalid as a whole
        out["wrong"] = {i: (None if any(v is None for v in ls) else ls) for i, ls in out["wrong"].items()}
    return out


def _n_scored_keys(task: TofuTask) -> int:
    return sum(2 + len(it.wrong) for it in task.items)


# ------------------------------------------------------------------------------------ retain logs


def _norm_words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


# Protocol fields that change the truth ratios (the row cap is checked through the item count).
_TR_FIELDS = ("max_length", "max_length_includes_eos", "truncate_chat", "answer_tag_in_prompt", "boundary")


def load_retain_reference(
    retain_logs: str | Path | dict,
    *,
    forget_task: TofuTask,
    forget_split: str,
    protocol: TofuProtocol,
    prompt_format: PromptFormat | None = None,
) -> tuple[dict, str]:
    """The retain model's ``forget_truth_ratio`` from a log, checked against this run's forget items.

    Accepts alignkit's and open-unlearning's ``TOFU_EVAL.json`` (or a run folder). Refuses a log of
    another forget split, protocol, prompt format or size: Forget Quality is only defined on the
    same items scored the same way. open-unlearning logs carry no metadata; their size, indices and
    ROUGE reference answers are checked.
    """
    if isinstance(retain_logs, dict):
        logs, where = retain_logs, "retain logs (dict)"
    else:
        p = Path(retain_logs)
        where = str(p / EVAL_FILE if p.is_dir() else p)
        logs = read_eval_log(p)
    entry = logs.get("forget_truth_ratio") if isinstance(logs, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("value_by_index"), dict):
        raise UserError(
            f"retain log {where} has no 'forget_truth_ratio' entry with 'value_by_index'; Forget Quality needs "
            "the retain model's per-item truth ratios (a TOFU_EVAL.json written by alignkit or open-unlearning)."
        )
    meta = logs.get(META_KEY) or {}
    if meta:
        if meta.get("forget_split") not in (None, forget_split):
            raise UserError(
                f"retain log {where} is for forget split {meta['forget_split']!r}, but this run evaluates "
                f"{forget_split!r}; Forget Quality compares the same forget items."
            )
        theirs = meta.get("protocol") or {}
        if theirs.get("name") not in (None, protocol.name):
            raise UserError(
                f"retain log {where} was written under protocol {theirs['name']!r}, this run uses "
                f"{protocol.name!r}; truth ratios from different protocols are not comparable."
            )
        ours = protocol.to_dict()
        differ = [
            f"{f}={theirs[f]!r} (here {ours[f]!r})"
            for f in _TR_FIELDS
            if f in theirs and theirs[f] != ours[f]
        ]
        if differ:
            raise UserError(
                f"retain log {where} differs from this run in {', '.join(differ)}; the truth ratios behind "
                "Forget Quality must be computed the same way."
            )
        if prompt_format is not None and meta.get("prompt_format") not in (None, prompt_format.to_dict()):
            raise UserError(
                f"retain log {where} used prompt format {meta['prompt_format']} but this run uses "
                f"{prompt_format.to_dict()}; Forget Quality needs the same template on both models."
            )
    vbi = entry["value_by_index"]
    n_ours = len(forget_task.items)
    if len(vbi) != n_ours:
        raise UserError(
            f"retain log {where} has {len(vbi)} forget truth ratios, but this run evaluates {n_ours} items of "
            f"{forget_task.spec.config} ({forget_task.source}). Forget Quality needs the same items: the same "
            "forget split, the same protocol row cap, and no --max-examples (or the same one) on both runs."
        )
    ours = {str(it.index) for it in forget_task.items}
    if set(map(str, vbi)) != ours:
        raise UserError(
            f"retain log {where}: its item indices do not match rows 0..{n_ours - 1} of {forget_task.spec.config}."
        )
    # open-unlearning logs carry no split name; its ROUGE entries carry the reference answers.
    rouge = (logs.get("forget_Q_A_ROUGE") or {}).get("value_by_index") or {}
    if not meta and rouge:
        answers = {str(it.index): _norm_words(it.answer) for it in forget_task.items}
        gts = {str(k): v.get("ground_truth") for k, v in rouge.items() if isinstance(v, dict)}
        same = sum(
            1
            for k, gt in gts.items()
            if isinstance(gt, str) and k in answers and _norm_words(gt) in answers[k]
        )
        if gts and same < 0.9 * len(gts):
            raise UserError(
                f"retain log {where}: only {same} of {len(gts)} reference answers in its forget_Q_A_ROUGE match "
                f"{forget_task.spec.config}; it looks like a log of another forget split."
            )
    return entry, where


# ------------------------------------------------------------------------------------ progress


# ------------------------------------------------------------------------------------ checks


def _check_format(fmt: PromptFormat, tokenizer, who: str) -> None:
    if fmt.mode == "chat" and not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"The prompt format is 'chat' but the tokenizer of {who} has no chat template. Pass a tag format "
            "(prompt_format='qa_plain' / --prompt-format qa_plain, or 'llama2_inst'), or set "
            "`tokenizer.chat_template`."
        )


# ------------------------------------------------------------------------------------ runner


def evaluate_tofu(
    model,
    tokenizer=None,
    *,
    data: str | Path = DEFAULT_DATA,
    forget_split: str = "forget10",
    retain_model=None,
    retain_logs: str | Path | dict | None = None,
    protocol: str | TofuProtocol = "open-unlearning",
    prompt_format: PromptFormat | str | None = None,
    batch_size: int = 16,
    max_examples: int | None = None,
    output_dir: str | Path | None = None,
    progress=True,
    dtype: str = "auto",
    holdout: str | None = "auto",
) -> TofuResult:
    """Evaluate ``model`` on TOFU; returns a :class:`TofuResult` (and saves it when ``output_dir``).

    Args:
        model: a loaded causal LM or a path / Hub id.
        tokenizer: its tokenizer (loaded from ``model`` when ``None`` and ``model`` is a path).
        data: ``"locuslab/TOFU"`` or a local folder with the same ``<config>.json`` files.
        forget_split: ``forget01``, ``forget05`` or ``forget10`` (needs ``<split>_perturbed``).
        retain_model: the oracle trained on ``retain(100-XX)`` (model or path); its forget truth ratios
            are computed here under the same protocol and format. Mutually exclusive with ``retain_logs``.
        retain_logs: a ``TOFU_EVAL.json`` (alignkit's or open-unlearning's) of that oracle, or a dict.
            Without either, ``forget_quality`` is ``None``.
        protocol: ``"open-unlearning"`` (default), ``"tofu-orig"``, or a :class:`TofuProtocol`.
        prompt_format: a :class:`PromptFormat`, a preset name, ``"ou_chat"`` or ``None``/``"auto"``
            (chat template when the tokenizer has one, else ``qa_plain``; alignkit's training default).
        batch_size: rows per forward / per generate call.
        max_examples: keep the first N rows of every eval file (quick runs; FQ then needs a retain
            reference on the same rows).
        progress: ``True`` for rich progress bars, ``False``/``None`` for none, or a running
            ``rich.progress.Progress``.
        dtype: dtype when loading from a path (``auto``: bfloat16 on GPU, float32 on CPU).
        holdout: the non-member split of the MIA (``mia_min_k``) and PrivLeak: ``"auto"`` (default) uses
            ``holdout{XX}`` of the forget split when ``data`` has it (a warning names it otherwise), a split
            name requires it, ``None``/``"none"`` skips them. PrivLeak also needs the retain model's AUC.
    """
    proto = get_protocol(protocol)
    _check_arguments(retain_model, retain_logs, max_examples, batch_size)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    setup = _prepare(
        model,
        tokenizer,
        data,
        forget_split,
        retain_model,
        retain_logs,
        proto,
        prompt_format,
        max_examples,
        holdout,
    )
    timings["load"] = time.perf_counter() - t0

    same_path = isinstance(retain_model, (str, Path)) and isinstance(model, (str, Path))
    same_model = retain_model is not None and (
        retain_model is model or (same_path and Path(retain_model) == Path(model))
    )
    if retain_model is not None and not same_model:
        t = time.perf_counter()
        setup.reference = _retain_model_reference(retain_model, setup, proto, batch_size, progress, dtype)
        timings["retain_reference"] = time.perf_counter() - t
    if retain_model is not None:
        setup.ref_source, setup.ref_kind = model_name(retain_model) or "retain model", "model"

    t = time.perf_counter()
    model_obj = load_model(model, dtype)
    timings["load"] += time.perf_counter() - t
    enc = _Encoder(setup.tokenizer, setup.fmt, proto)
    cache = ScoreCache(model_obj, enc, batch_size=batch_size)
    gen_stats: dict = {}
    logs: dict = {}
    was_training = model_obj.training
    model_obj.eval()
    try:
        with StageProgress(progress) as bars:
            for task in setup.tasks.values():
                _evaluate_task(logs, task, model_obj, cache, proto, batch_size, bars, timings, gen_stats)
            if setup.holdout is not None:
                t = time.perf_counter()
                logs["mia_min_k"] = _mia(setup, cache)
                timings["mia"] = time.perf_counter() - t
                if same_model:
                    setup.retain_auc = logs["mia_min_k"]["agg_value"]
            if same_model:
                t = time.perf_counter()
                setup.reference = _forget_truth_ratios(
                    setup.tasks["forget"], cache, proto, bars
                )  # cache hits
                timings["retain_reference"] = time.perf_counter() - t
    finally:
        if was_training:
            model_obj.train()

    if "mia_min_k" in logs:
        logs["privleak"] = privleak_entry(logs["mia_min_k"]["agg_value"], setup.retain_auc, setup.ref_source)
    t = time.perf_counter()
    _aggregate(logs, setup.reference)
    timings["aggregate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    stats = {**{f"score_{k}": v for k, v in cache.stats.items()}, **gen_stats}
    logs[META_KEY] = _run_metadata(
        logs, setup, proto, model, data, forget_split, max_examples, timings, stats
    )
    result = TofuResult(logs=_jsonable(logs), summary=summarize(logs), timings=timings, stats=stats)
    if output_dir is not None:
        result.save(output_dir)
    return result


# ---------------------------------------------------------------------------- evaluate_tofu stages


@dataclass
class _Setup:
    """What :func:`_prepare` resolved before any model runs."""

    tokenizer: object
    fmt: PromptFormat
    tasks: dict[str, TofuTask]
    retain_tok: object = None
    reference: dict | None = None  # the retain model's forget truth ratios (Forget Quality's reference)
    ref_source: str | None = None
    ref_kind: str | None = None
    holdout: list | None = None  # the MIA's non-member rows (None: no MIA / PrivLeak)
    holdout_split: str | None = None
    retain_auc: float | None = None  # the retain model's mia_min_k AUC (PrivLeak's reference)


def _check_arguments(retain_model, retain_logs, max_examples, batch_size) -> None:
    if retain_model is not None and retain_logs is not None:
        raise ValueError(
            "Pass either `retain_model` or `retain_logs` (the Forget Quality reference), not both."
        )
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"`max_examples` must be >= 1, got {max_examples}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")


def _prepare(
    model,
    tokenizer,
    data,
    forget_split,
    retain_model,
    retain_logs,
    proto,
    prompt_format,
    max_examples,
    holdout,
) -> _Setup:
    """Tokenizer, prompt format, the eval tasks and a logged reference: every check that needs no model."""
    tokenizer = load_tokenizer(tokenizer, model, who="evaluate_tofu")
    fmt = resolve_prompt_format(prompt_format, tokenizer)
    _check_format(fmt, tokenizer, model_name(model) or "the model")

    caps = [c for c in (proto.max_eval_rows, max_examples) if c is not None]
    cap = min(caps) if caps else None
    tasks = {spec.key: load_task(data, spec, max_rows=cap) for spec in task_specs(forget_split)}
    setup = _Setup(tokenizer=tokenizer, fmt=fmt, tasks=tasks)
    if holdout not in (None, "none"):
        split = holdout_split_for(forget_split) if holdout == "auto" else holdout
        setup.holdout = load_holdout(data, split, required=holdout != "auto", max_rows=cap)
        setup.holdout_split = split if setup.holdout is not None else None
    if retain_logs is not None:
        setup.reference, setup.ref_source = load_retain_reference(
            retain_logs,
            forget_task=tasks["forget"],
            forget_split=forget_split,
            protocol=proto,
            prompt_format=fmt,
        )
        setup.ref_kind = "logs"
        retain = retain_logs if isinstance(retain_logs, dict) else read_eval_log(retain_logs)
        mia_entry = retain.get("mia_min_k") if isinstance(retain.get("mia_min_k"), dict) else {}
        if setup.holdout is not None and mia_entry.get("holdout_split") in (None, setup.holdout_split):
            setup.retain_auc = mia_entry.get("agg_value")
    if retain_model is not None:
        setup.retain_tok = (
            tokenizer
            if not isinstance(retain_model, (str, Path))
            else load_tokenizer(None, retain_model, who="evaluate_tofu")
        )
        _check_format(fmt, setup.retain_tok, model_name(retain_model) or "the retain model")
    return setup


def _retain_model_reference(retain_model, setup: _Setup, proto, batch_size, progress, dtype) -> dict:
    """The retain model's forget truth ratios. It runs first: a bad path fails before the long run,
    and the two models are never in memory together."""
    ref_obj = load_model(retain_model, dtype)
    ref_was_training = ref_obj.training
    ref_cache = ScoreCache(
        ref_obj.eval(), _Encoder(setup.retain_tok, setup.fmt, proto), batch_size=batch_size
    )
    try:
        with StageProgress(progress) as bars:
            reference = _forget_truth_ratios(setup.tasks["forget"], ref_cache, proto, bars)
        if setup.holdout is not None:
            setup.retain_auc = _mia(setup, ref_cache)["agg_value"]
        return reference
    finally:
        if ref_was_training:
            ref_obj.train()


def _evaluate_task(
    logs, task: TofuTask, model, cache: ScoreCache, proto, batch_size, bars, timings, gen_stats
):
    """One eval file: answer/paraphrase/perturbed losses -> Prob and Truth Ratio, then greedy answers -> ROUGE."""
    key, enc, tokenizer = task.spec.key, cache.encoder, cache.encoder.tokenizer
    t = time.perf_counter()
    losses = _task_losses(
        task,
        cache,
        enc,
        what=("answer", "correct", "wrong"),
        progress=bars.stage(f"{key}: scoring answers", _n_scored_keys(task)),
        answer_argmax=key == "forget",  # Extraction Strength / Exact Memorisation below
    )
    timings[f"{key}:score"] = time.perf_counter() - t
    t = time.perf_counter()
    _prob_and_tr_metrics(logs, task, losses, proto)
    if key == "forget":
        logs.update(_memorization_metrics(task, cache, proto))
    timings[f"{key}:metrics"] = time.perf_counter() - t

    t = time.perf_counter()
    prompts = [enc.generation_prompt_ids(it.question) for it in task.items]
    new_ids = generate_token_ids(
        model,
        tokenizer,
        prompts,
        max_new_tokens=proto.max_new_tokens,
        max_total_length=proto.generation_max_length,
        batch_size=batch_size,
        progress=bars.stage(f"{key}: generating", len(prompts)),
        stats=gen_stats,
    )
    gens = decode_generations(tokenizer, new_ids)
    timings[f"{key}:generate"] = time.perf_counter() - t
    t = time.perf_counter()
    idx = [str(it.index) for it in task.items]
    logs[f"{key}_Q_A_ROUGE"] = M.rouge(
        dict(zip(idx, gens)),
        {str(it.index): enc.rouge_reference(it.question, it.answer) for it in task.items},
        rouge_type="rougeL_recall",
        use_stemmer=proto.rouge_use_stemmer,
        inputs={str(it.index): enc.score_prompt(it.question) for it in task.items},
    )
    timings[f"{key}:rouge"] = time.perf_counter() - t


def _mia(setup: _Setup, cache: ScoreCache) -> dict:
    return mia_min_k(
        cache, cache.encoder, setup.tasks["forget"], setup.holdout, holdout_split=setup.holdout_split
    )


def _aggregate(logs: dict, reference: dict | None) -> None:
    """Forget Quality (KS test against the reference) and Model Utility (harmonic mean of 9)."""
    logs["forget_quality"] = M.forget_quality(logs["forget_truth_ratio"], reference)
    logs["model_utility"] = M.model_utility({k: logs[k]["agg_value"] for k in M.MODEL_UTILITY_COMPONENTS})


def _run_metadata(
    logs, setup: _Setup, proto, model, data, forget_split, max_examples, timings, stats
) -> dict:
    """What the log records under ``"alignkit"``: protocol, format, sizes, reference, timings."""
    fq_note = None
    if setup.reference is None:
        fq_note = (
            "Forget Quality not computed: it needs the retain model's truth ratios on the same forget items "
            "(pass --retain-model PATH or --retain-logs TOFU_EVAL.json)."
        )
    return {
        "benchmark": "tofu",
        "forget_split": forget_split,
        "protocol": proto.to_dict(),
        "prompt_format": setup.fmt.to_dict(),
        "boundary": proto.boundary,
        "data": str(data),
        "model": model_name(model),
        "tokenizer": model_name(setup.tokenizer),
        "n": {k: len(t.items) for k, t in setup.tasks.items()},
        "rows_in_file": {k: t.total_rows for k, t in setup.tasks.items()},
        "max_examples": max_examples,
        "retain_reference": {"kind": setup.ref_kind, "source": setup.ref_source},
        "holdout_split": setup.holdout_split,
        "forget_quality_note": fq_note,
        "invalid_items": _invalid_counts(logs),
        "timings": timings,
        "stats": stats,
    }


def _forget_truth_ratios(task: TofuTask, cache: ScoreCache, proto: TofuProtocol, bars: StageProgress) -> dict:
    """The retain model's ``forget_truth_ratio`` (paraphrased vs perturbed answers on the forget set)."""
    total = sum(1 + len(it.wrong) for it in task.items)
    losses = _task_losses(
        task,
        cache,
        cache.encoder,
        what=("correct", "wrong"),
        progress=bars.stage("retain model: forget truth ratios", total),
    )
    return M.truth_ratio(
        losses["correct"], losses["wrong"], aggregator=proto.forget_tr_aggregator, form=proto.truth_ratio_form
    )


def _prob_and_tr_metrics(logs: dict, task: TofuTask, losses: dict, proto: TofuProtocol) -> None:
    k = task.spec.key
    logs[f"{k}_Q_A_Prob"] = M.probability(losses["answer"])
    logs[f"{k}_Q_A_PERT_Prob"] = M.probability(losses["wrong"])
    if task.spec.option_normalised:
        logs[f"{k}_Q_A_Prob_normalised"] = M.probability_w_options(losses["answer"], losses["wrong"])
    else:
        logs[f"{k}_Q_A_PARA_Prob"] = M.probability(losses["correct"])
    if k == "forget":
        logs["forget_truth_ratio"] = M.truth_ratio(
            losses["correct"],
            losses["wrong"],
            aggregator=proto.forget_tr_aggregator,
            form=proto.truth_ratio_form,
        )
    else:
        logs[f"{k}_Truth_Ratio"] = M.truth_ratio(
            losses["correct"],
            losses["wrong"],
            aggregator="true_better",
            wrong_mean=proto.mu_truth_ratio_mean,
            form=proto.truth_ratio_form,
        )


def _memorization_metrics(task: TofuTask, cache: ScoreCache, proto: TofuProtocol) -> dict:
    """Extraction Strength and Exact Memorisation of the forget answers (OU: ``forget{XX}_perturbed``'s
    ``answer``), from the argmax predictions of the answer scores already in the cache."""
    enc = cache.encoder
    scored = {
        str(it.index): cache.store[
            (task.spec.key, enc.score_prompt(it.question), enc.score_target(it.question, it.answer))
        ]
        for it in task.items
    }
    return memorization_logs(scored, floor=proto.es_floor)


def _invalid_counts(logs: dict) -> dict:
    out = {}
    for name, entry in logs.items():
        vbi = entry.get("value_by_index") if isinstance(entry, dict) else None
        if not vbi:
            continue
        n = sum(
            1
            for v in vbi.values()
            if isinstance(v, dict)
            and all(x is None for k, x in v.items() if k not in ("input", "ground_truth", "generation"))
        )
        if n:
            out[name] = n
    return out


__all__ = [
    "EVAL_FILE",
    "OU_CHAT_FORMAT",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "ScoreCache",
    "TofuResult",
    "evaluate_tofu",
    "load_retain_reference",
    "read_eval_log",
    "resolve_prompt_format",
    "summarize",
]
