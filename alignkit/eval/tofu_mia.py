"""TOFU membership inference on the holdout splits, and PrivLeak against the retain model.

Spec: ``shared/design/methods-unlearning-2.md`` §8.4 (open-unlearning's ``mia_min_k`` and ``privleak``).
Members are the forget rows (``forget{XX}_perturbed`` question/answer, scored with the QA prompt as every
other TOFU metric), non-members the ``holdout{XX}`` rows of the matching size (holdout01 with forget01, ...).
Per item, Min-K% (k = 0.4) over ``T'`` = the answer tokens without the EOS label, "higher = less
member-like"; ``AUC = P(s_holdout > s_forget) + P(tie)/2``. PrivLeak compares that AUC with the retain
model's: ``(a - r) / (r + 1e-10) * 100`` with ``a = 1 - AUC(model)``, ``r = 1 - AUC(retain)``; 0 = like the
retain model, about -100 = the forget set is fully recognisable. Without a retain AUC there is no PrivLeak
(open-unlearning's silent 0.5 fallback is wrong for TOFU: holdout answers are longer than forget answers,
so even a model that saw neither set separates them somewhat).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from alignkit.eval import mia
from alignkit.eval.tofu_data import describe_source, load_tofu

logger = logging.getLogger(__name__)

MIN_K = 0.4
HOLDOUT_KEY = "holdout"


@dataclass
class HoldoutItem:
    index: int
    question: str
    answer: str


def holdout_split_for(forget_split: str) -> str:
    """``forget10`` -> ``holdout10`` (the sizes must match: 40 / 200 / 400 rows)."""
    return "holdout" + re.sub(r"^forget", "", forget_split)


def load_holdout(
    data, split: str, *, required: bool, max_rows: int | None = None
) -> list[HoldoutItem] | None:
    """The holdout rows, or ``None`` (with a one-line warning naming the split) when absent and not required."""
    try:
        rows = load_tofu(data, split)
    except FileNotFoundError as err:
        message = f"TOFU holdout split {split!r} not found ({describe_source(data, split)})"
        if required:
            raise FileNotFoundError(
                f"{message}; MIA/PrivLeak need it. Put {split}.json beside the forget files or pass --holdout none."
            ) from err
        logger.warning("%s: MIA and PrivLeak skipped (pass --holdout SPLIT to require them).", message)
        return None
    source = describe_source(data, split)
    items = []
    for i, row in enumerate(rows[:max_rows] if max_rows is not None else rows):
        q, a = row.get("question"), row.get("answer")
        if not isinstance(q, str) or not isinstance(a, str):
            field = "question" if not isinstance(q, str) else "answer"
            raise ValueError(f"{source}: row {i}: field {field!r} is missing or not a string.")
        items.append(HoldoutItem(i, q, a))
    if not items:
        raise ValueError(f"{source} has no rows.")
    return items


def min_k_answer_score(scored, k: float = MIN_K) -> float:
    """Min-K% of one scored answer over ``T'`` (the EOS label dropped, as open-unlearning reads it); 0 if empty."""
    if not scored.valid:
        return 0.0
    tokens = scored.token_logps.float()[:-1]
    return 0.0 if tokens.numel() == 0 else mia.min_k_score(tokens.numpy(), k)


def mia_min_k(
    cache, enc, forget_task, holdout: list[HoldoutItem], *, holdout_split: str, k: float = MIN_K
) -> dict:
    """``mia_min_k`` log entry of one model: per-item scores of forget and holdout answers, and the AUC.

    Forget answers are scored under the same cache key as the answer probability, so they cost nothing.
    """
    forget_keys = [
        (forget_task.spec.key, enc.score_prompt(it.question), enc.score_target(it.question, it.answer))
        for it in forget_task.items
    ]
    holdout_keys = [
        (HOLDOUT_KEY, enc.score_prompt(it.question), enc.score_target(it.question, it.answer))
        for it in holdout
    ]
    forget_scores = [min_k_answer_score(s, k) for s in cache.score(forget_keys)]
    holdout_scores = [min_k_answer_score(s, k) for s in cache.score(holdout_keys)]
    extra = {"k": k, "holdout_split": holdout_split, "tokens": "answer tokens without the EOS label"}
    if not all(math.isfinite(s) for s in forget_scores + holdout_scores):
        # An empty answer scores 0 above, so a non-finite score means the model's own log-probs are not
        # finite (a diverged model): the AUC is NaN, which `eval` reports in its non-finite warning.
        nan = float("nan")
        return {
            "agg_value": nan,
            "auc": nan,
            "forget": mia.split_log(forget_scores),
            "holdout": mia.split_log(holdout_scores),
            **extra,
        }
    return mia.auc_log(forget_scores, holdout_scores, "min_k", **extra)


def privleak_entry(auc_model: float, auc_retain: float | None, source: str | None) -> dict:
    """open-unlearning's ``privleak`` entry; ``agg_value`` None (and a note) without a retain AUC."""
    if auc_retain is None:
        return {
            "agg_value": None,
            "note": "PrivLeak needs the retain model's mia_min_k AUC on the same holdout split "
            "(pass --retain-model, or --retain-logs of a run that has mia_min_k).",
        }
    return {
        "agg_value": mia.privleak(auc_model, auc_retain),
        "retain_auc": auc_retain,
        "retain_source": source,
    }
