"""Exact Memorisation (EM) and Extraction Strength (ES), as open-unlearning logs them.

Spec: ``shared/design/methods-unlearning-2.md`` §8.1-§8.3. Both read the teacher-forced argmax
predictions ``ŷ_t = argmax_v log p(v | x, y_<t)`` over the token set ``T'``: the scored target
tokens **without the last one** (for a TOFU answer, the answer tokens without EOS; OU's
``tokenwise_vocab_logprobs`` drops it), ``n = |T'|``.

* ``EM = (1/n) · #{t : ŷ_t = y_t}`` (Tirumala et al. 2022). ``n = 0`` gives ``None``, left out of the mean.
* ``ES = 1 - k*/n`` (Carlini et al. 2021), ``k*`` the smallest ``k`` whose suffix ``T'[k:]`` is
  predicted exactly, i.e. greedy decoding from ``y_<k`` reproduces the rest: ``n - k*`` is the
  longest matching suffix. Floors (``es_floor``):

  - ``"ou"`` (default, comparable with open-unlearning logs): OU's loop stops at ``k = n - 1`` when
    nothing matches, so "nothing matches" scores ``1/n`` like "only the last token matches"; an item
    with ``n = 0`` scores 0 and **counts** in the mean.
  - ``"strict"``: nothing matching scores 0 (the SatImp authors' ``eval_es.py``); ``n = 0`` gives ``None``.

Per index both log ``{"score": x}`` and ``agg_value`` is the mean of the non-``None`` scores (OU's layout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alignkit.eval.metrics import register_metric
from alignkit.eval.scoring import ScoredText

ES_FLOORS = ("ou", "strict")

Tokens = Sequence[int]


def token_set(predictions: Tokens, targets: Tokens) -> tuple[list[int], list[int]]:
    """``T'``: the argmax predictions and targets of every scored token but the last (OU drops EOS)."""
    _check_pairs(predictions, targets)
    return [int(p) for p in predictions[:-1]], [int(t) for t in targets[:-1]]


def exact_memorization_value(predictions: Tokens, targets: Tokens) -> float | None:
    """EM of one item over ``T'`` (already cut, see :func:`token_set`); ``None`` when ``T'`` is empty."""
    _check_pairs(predictions, targets)
    if len(targets) == 0:
        return None
    return sum(int(p) == int(t) for p, t in zip(predictions, targets)) / len(targets)


def extraction_strength_value(predictions: Tokens, targets: Tokens, *, floor: str = "ou") -> float | None:
    """ES of one item over ``T'`` (already cut): ``1 - k*/n``, with the floor of ``floor`` (module docstring)."""
    if floor not in ES_FLOORS:
        raise ValueError(f"`es_floor` must be one of {ES_FLOORS}, got {floor!r}")
    _check_pairs(predictions, targets)
    n = len(targets)
    if n == 0:
        return 0.0 if floor == "ou" else None
    matched = 0  # length of the longest suffix predicted exactly
    while matched < n and int(predictions[n - 1 - matched]) == int(targets[n - 1 - matched]):
        matched += 1
    if floor == "ou":
        matched = max(matched, 1)
    return matched / n


def _check_pairs(predictions: Tokens, targets: Tokens) -> None:
    if len(predictions) != len(targets):
        raise ValueError(
            f"{len(predictions)} predictions for {len(targets)} targets; they pair up one to one"
        )


def _log(scores: dict[Any, float | None]) -> dict:
    kept = [s for s in scores.values() if s is not None]
    return {
        "agg_value": float(np.mean(kept)) if kept else None,
        "value_by_index": {idx: {"score": s} for idx, s in scores.items()},
    }


@register_metric("exact_memorization")
def exact_memorization(items: Mapping[Any, tuple[Tokens, Tokens]]) -> dict:
    """EM per index from ``{idx: (predictions, targets)}`` over ``T'``; ``agg_value`` = mean of the defined ones."""
    return _log({idx: exact_memorization_value(p, t) for idx, (p, t) in items.items()})


@register_metric("extraction_strength")
def extraction_strength(items: Mapping[Any, tuple[Tokens, Tokens]], *, floor: str = "ou") -> dict:
    """ES per index from ``{idx: (predictions, targets)}`` over ``T'``; ``agg_value`` = mean (OU counts empty items as 0)."""
    out = _log({idx: extraction_strength_value(p, t, floor=floor) for idx, (p, t) in items.items()})
    out["es_floor"] = floor
    return out


def memorization_logs(scored: Mapping[Any, ScoredText], *, floor: str = "ou") -> dict[str, dict]:
    """``extraction_strength`` and ``exact_memorization`` log entries from teacher-forced scores.

    ``scored[idx]`` holds the target ids and argmax predictions of one item (from
    :func:`alignkit.eval.scoring.score_token_ids`); ``T'`` drops the last scored token. An item
    with no target token counts as empty (ES 0 under OU's floor, EM ``None``).
    """
    if any(s.valid and s.argmax_ids is None for s in scored.values()):
        raise ValueError("memorization_logs: score the texts with score_token_ids(..., argmax=True)")
    items = {idx: token_set(s.argmax_ids, s.target_ids) if s.valid else ([], []) for idx, s in scored.items()}
    return {
        "extraction_strength": extraction_strength(items, floor=floor),
        "exact_memorization": exact_memorization(items),
    }
