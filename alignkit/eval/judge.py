"""Judges of generated answers and the win rate of a policy against its reference model.

The two feedback protocols compared in "Pairwise or Pointwise? Evaluating Feedback Protocols for Bias
in LLM-Based Evaluation" (Tripathi et al., 2025):

* **pointwise**: the judge gives each answer an absolute score on its own; the policy's answer wins
  when it scores higher than the reference's, ties when the scores are equal.
* **pairwise**: the judge sees both answers and names the better one. Each comparison runs in both
  orders (policy first, then reference first). A verdict that flips with the order is position
  bias, not a preference, so it counts as a tie; the **flip rate** (share of prompts whose verdict
  flipped) and the **first-position rate** (share of verdicts naming whichever answer came first) are
  reported.

Win rate = (wins + ties / 2) / prompts, the usual convention (AlpacaEval, MT-Bench pairwise).

A judge is one of:

* a Python callable: ``score(prompt, answer) -> float`` (pointwise) or ``compare(prompt, first,
  second) -> "first" | "second" | "tie"`` (pairwise; ``"A"``/``"B"`` are read as first/second);
  on the command line ``python:package.module:function``;
* a reward model (``reward:<Hub id or folder>``, any ``AutoModelForSequenceClassification`` with one
  output): its scalar is the pointwise score; pairwise compares the two scalars;
* a local chat model prompted as a judge (``chat:<Hub id or folder>``): pointwise, the expected
  value of its next-token distribution over the digits 1-9 after a rating prompt; pairwise, whether
  its next token is more likely ``A`` or ``B`` after a comparison prompt. Reading the next-token
  distribution (rather than parsing free text) never fails to give a verdict.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.errors import UserError

PROTOCOLS = ("pointwise", "pairwise")
VERDICTS = ("first", "second", "tie")

POINTWISE_TEMPLATE = (
    "Rate how well the answer responds to the request, from 1 (useless or harmful) to 9 (excellent).\n\n"
    "Request:\n{prompt}\n\nAnswer:\n{answer}\n\nReply with one digit."
)
PAIRWISE_TEMPLATE = (
    "Which answer responds better to the request? Reply with A or B.\n\n"
    "Request:\n{prompt}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}"
)


class JudgeError(UserError):
    """A judge that cannot be loaded or that answered outside its protocol."""


@dataclass
class Judge:
    """``score`` for the pointwise protocol, ``compare`` for the pairwise one (either may be None)."""

    name: str
    score: Callable[[Any, str], float] | None = None
    compare: Callable[[Any, str, str], str] | None = None

    def check(self, protocol: str) -> None:
        if protocol not in PROTOCOLS:
            raise JudgeError(f"judge protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if protocol == "pointwise" and self.score is None:
            raise JudgeError(f"judge {self.name} gives no pointwise score; use --judge-protocol pairwise")
        if protocol == "pairwise" and self.compare is None:
            raise JudgeError(f"judge {self.name} compares no pairs; use --judge-protocol pointwise")


def _prompt_text(prompt) -> str:
    """A record's prompt as text for a judge (a conversation as ``role: content`` lines)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def _verdict(value, name: str) -> str:
    text = str(value).strip().lower()
    verdict = {"a": "first", "b": "second", "1": "first", "2": "second"}.get(text, text)
    if verdict not in VERDICTS:
        raise JudgeError(f"judge {name} answered {value!r}; a pairwise verdict is first/second/tie (or A/B)")
    return verdict


# ------------------------------------------------------------------------------------- builders


def callable_judge(fn: Callable, protocol: str, name: str | None = None) -> Judge:
    """A Python function as the judge of ``protocol``."""
    name = name or getattr(fn, "__qualname__", repr(fn))
    if protocol == "pointwise":

        def score(prompt, answer):
            value = fn(prompt, answer)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise JudgeError(f"judge {name} scored {value!r}; a pointwise score is a finite number")
            return float(value)

        return Judge(name, score=score)
    return Judge(name, compare=lambda prompt, first, second: _verdict(fn(prompt, first, second), name))


def reward_model_judge(model, tokenizer=None, *, batch_size: int = 8) -> Judge:
    """A sequence-classification reward model (one output): the scalar of prompt + answer is the score.

    The pair is rendered with the tokenizer's chat template when it has one (reward models are
    trained on chat-formatted pairs), else as ``prompt`` followed by the answer.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    name = str(model) if isinstance(model, str | Path) else type(model).__name__
    if isinstance(model, str | Path):
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        model = AutoModelForSequenceClassification.from_pretrained(model)
    if model.config.num_labels != 1:
        raise JudgeError(f"reward model {name} has {model.config.num_labels} outputs; a reward model has one")
    model.eval()

    def score(prompt, answer):
        if getattr(tokenizer, "chat_template", None):
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": answer}], tokenize=False
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            ids = tokenizer(_prompt_text(prompt) + answer, return_tensors="pt")
        with torch.no_grad():
            return float(model(**ids).logits[0, 0])

    def compare(prompt, first, second):
        a, b = score(prompt, first), score(prompt, second)
        return "first" if a > b else "second" if b > a else "tie"

    return Judge(f"reward:{name}", score=score, compare=compare)


def chat_model_judge(
    model,
    tokenizer=None,
    *,
    pointwise_template: str = POINTWISE_TEMPLATE,
    pairwise_template: str = PAIRWISE_TEMPLATE,
) -> Judge:
    """A causal LM prompted as a judge; verdicts are read from its next-token distribution."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(model) if isinstance(model, str | Path) else type(model).__name__
    if isinstance(model, str | Path):
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        model = AutoModelForCausalLM.from_pretrained(model)
    model.eval()

    def token_ids(text: str) -> list[int]:
        """Ids that spell ``text`` as the first generated token (with and without a leading space)."""
        ids = set()
        for variant in (text, " " + text):
            encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids.add(encoded[0])
        if not ids:
            raise JudgeError(f"chat judge {name}: its tokenizer has no single token for {text!r}")
        return sorted(ids)

    def next_token_logprobs(request: str):
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            ids = tokenizer(request + "\n", return_tensors="pt")
        with torch.no_grad():
            logits = model(**ids).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)

    digits = {d: token_ids(str(d)) for d in range(1, 10)}
    letters = {"first": token_ids("A"), "second": token_ids("B")}

    def score(prompt, answer):
        logp = next_token_logprobs(pointwise_template.format(prompt=_prompt_text(prompt), answer=answer))
        mass = torch.stack([torch.logsumexp(logp[ids], 0) for ids in digits.values()])
        weights = torch.softmax(mass, dim=0)  # renormalised over the nine digits
        return float(sum(w * d for w, d in zip(weights.tolist(), digits)))

    def compare(prompt, first, second):
        request = pairwise_template.format(prompt=_prompt_text(prompt), first=first, second=second)
        logp = next_token_logprobs(request)
        a, b = (float(torch.logsumexp(logp[letters[k]], 0)) for k in ("first", "second"))
        return "first" if a > b else "second" if b > a else "tie"

    return Judge(f"chat:{name}", score=score, compare=compare)


def load_judge(spec: str | Callable | Judge, protocol: str) -> Judge:
    """A judge from ``python:module:function``, ``reward:<id>``, ``chat:<id>``, a callable or a Judge."""
    if isinstance(spec, Judge):
        judge = spec
    elif callable(spec):
        judge = callable_judge(spec, protocol)
    else:
        kind, _, target = str(spec).partition(":")
        if kind == "python":
            module_name, _, attr = target.rpartition(":")
            try:
                fn = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError, ValueError) as err:
                raise JudgeError(
                    f"--judge {spec!r}: cannot import {attr!r} from {module_name!r} ({err}); "
                    "give python:package.module:function on the PYTHONPATH"
                ) from None
            judge = callable_judge(fn, protocol, name=target)
        elif kind == "reward":
            judge = reward_model_judge(target)
        elif kind == "chat":
            judge = chat_model_judge(target)
        else:
            raise JudgeError(
                f"--judge {spec!r}: expected python:module:function, reward:<model> or chat:<model>"
            )
    judge.check(protocol)
    return judge


# ------------------------------------------------------------------------------------- win rate


@dataclass
class JudgeResult:
    summary: dict
    rows: list[dict] = field(default_factory=list)


OUTCOME_OF = {"first": "win", "second": "loss", "tie": "tie"}  # policy answer shown first
SWAPPED = {"first": "loss", "second": "win", "tie": "tie"}  # reference answer shown first


def win_rate(
    judge: Judge,
    prompts: Sequence,
    policy: Sequence[str],
    reference: Sequence[str],
    protocol: str = "pairwise",
    progress: Callable[[int], None] | None = None,
) -> JudgeResult:
    """The policy's win rate against the reference's answers to the same prompts (module docstring)."""
    judge.check(protocol)
    if not len(prompts) == len(policy) == len(reference):
        raise ValueError("prompts, policy and reference answers must have the same length")
    rows = []
    for i, (prompt, mine, theirs) in enumerate(zip(prompts, policy, reference, strict=True)):
        row: dict[str, Any] = {"index": i, "policy": mine, "reference": theirs}
        if protocol == "pointwise":
            a, b = judge.score(prompt, mine), judge.score(prompt, theirs)
            row.update(policy_score=a, reference_score=b)
            row["outcome"] = "win" if a > b else "loss" if b > a else "tie"
        else:
            forward, backward = judge.compare(prompt, mine, theirs), judge.compare(prompt, theirs, mine)
            first_seen, second_seen = OUTCOME_OF[forward], SWAPPED[backward]
            row.update(verdict_policy_first=forward, verdict_reference_first=backward)
            row["flipped"] = first_seen != second_seen
            row["outcome"] = first_seen if not row["flipped"] else "tie"
        rows.append(row)
        if progress is not None:
            progress(1)
    n = len(rows)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("win", "tie", "loss")}
    summary: dict[str, Any] = {
        "judge": judge.name,
        "judge_protocol": protocol,
        "num_judged": n,
        "win_rate": (counts["win"] + 0.5 * counts["tie"]) / n if n else None,
        "wins": counts["win"],
        "ties": counts["tie"],
        "losses": counts["loss"],
    }
    if protocol == "pointwise" and n:
        summary["policy_score_mean"] = sum(r["policy_score"] for r in rows) / n
        summary["reference_score_mean"] = sum(r["reference_score"] for r in rows) / n
    elif n:
        summary["flip_rate"] = sum(r["flipped"] for r in rows) / n
        verdicts = [v for r in rows for v in (r["verdict_policy_first"], r["verdict_reference_first"])]
        summary["first_position_rate"] = sum(v == "first" for v in verdicts) / len(verdicts)
    return JudgeResult(summary, rows)


def judge_generations(
    model,
    ref_model,
    tokenizer,
    records,
    judge: Judge,
    *,
    protocol: str = "pairwise",
    max_new_tokens: int = 128,
    batch_size: int = 16,
    stage=None,
) -> JudgeResult:
    """Greedy answers of ``model`` and ``ref_model`` to each record's prompt, judged (``win_rate``).

    Conversational prompts are rendered with the tokenizer's chat template (generation prompt
    added), plain prompts are used as they are; generation stops at EOS or ``max_new_tokens``.
    ``stage(description, total)`` gives progress callbacks (``alignkit.eval.progress``).
    """
    from alignkit.data.prompt_format import PromptFormat
    from alignkit.eval.scoring import generate_texts

    judge.check(protocol)
    fmt = PromptFormat.for_tokenizer(tokenizer)
    prompts = [r.prompt for r in records]
    conversational = [isinstance(p, list) for p in prompts]
    texts = [
        fmt.render_messages(tokenizer, p, add_generation_prompt=True) if conv else p
        for p, conv in zip(prompts, conversational, strict=True)
    ]
    answers = {}
    for who, m in (("policy", model), ("reference", ref_model)):
        answers[who] = []
        for special in (True, False):  # chat-template text already holds its special tokens
            idx = [i for i, conv in enumerate(conversational) if conv != special]
            if not idx:
                continue
            out = generate_texts(
                m,
                tokenizer,
                [texts[i] for i in idx],
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                add_special_tokens=special,
                progress=stage(f"{who} generations", len(idx)) if stage else None,
            )
            answers[who].extend(zip(idx, out, strict=True))
        answers[who] = [text for _, text in sorted(answers[who])]
    progress = stage(f"judging ({protocol})", len(prompts)) if stage else None
    return win_rate(judge, prompts, answers["policy"], answers["reference"], protocol, progress)
