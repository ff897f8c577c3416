"""TOFU metrics as registered functions that keep per-example values (open-unlearning's layout).

Every metric returns ``{"agg_value": x, "value_by_index": {idx: {...}}}`` (aggregate-only metrics
omit ``value_by_index``), so logs can be re-aggregated and Forget Quality can be computed from a
stored log. Inputs are average losses ``L = -(1/T) Σ_t log p(y_t|x, y_<t)`` per index (§0 of
``shared/design/benchmarks.md``); ``None`` marks an invalid item (no target token), which is left
out of every aggregate while its index is kept, so correct and wrong answers never shift against
each other (open-unlearning's index-shift bug, §5.8, cannot happen here).

Formulas (§2.4): ``p̄ = exp(-L)``; truth ratio ``R = exp(L_c - mean_j L_wj)`` (geometric mean of
the wrong answers' p̄ over p̄ of the correct one), in log space (``form="exact"``) or in
open-unlearning's ``p̄_w / (p̄_c + 1e-10)`` (``form="ou_epsilon"``, its protocol's choice).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize
from rouge_score import tokenizers as rouge_tokenizers
from scipy.stats import ks_2samp

from alignkit.eval.logs import MODEL_UTILITY_COMPONENTS

METRICS: dict[str, Callable[..., dict]] = {}

Loss = float | None
Losses = Mapping[Any, float | Sequence[float] | None]

# exp() of a float64 overflows above ~709; |L_c - mean L_w| beyond this only happens for collapsed
# models and the clipped ratio (~1e-304 or ~1e304) keeps every aggregate's meaning.
_MAX_LOG_RATIO = 700.0


def register_metric(name: str):
    """Register ``fn`` under ``name`` (open-unlearning's handler names) in :data:`METRICS`."""

    def wrap(fn):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = fn
        fn.metric_name = name
        return fn

    return wrap


def _is_valid(v) -> bool:
    if v is None:
        return False
    if isinstance(v, (list, tuple)):
        return len(v) > 0 and all(_is_valid(x) for x in v)
    return not math.isnan(float(v))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


@register_metric("probability")
def probability(avg_losses: Losses) -> dict:
    """``Prob = mean_i p̄(a_i|q_i)`` with ``p̄ = exp(-L)``; several answers per item are averaged first.

    Per index: ``{"prob": p̄, "avg_loss": L}`` (lists for several answers, as open-unlearning logs
    the perturbed answers).
    """
    by_index, kept = {}, []
    for idx, loss in avg_losses.items():
        if not _is_valid(loss):
            by_index[idx] = {"prob": None, "avg_loss": None}
        elif isinstance(loss, (list, tuple)):
            probs = [math.exp(-float(x)) for x in loss]
            by_index[idx] = {"prob": probs, "avg_loss": [float(x) for x in loss]}
            kept.append(float(np.mean(probs)))
        else:
            by_index[idx] = {"prob": math.exp(-float(loss)), "avg_loss": float(loss)}
            kept.append(by_index[idx]["prob"])
    return {"agg_value": _mean(kept), "value_by_index": by_index}


@register_metric("probability_w_options")
def probability_w_options(correct: Mapping[Any, Loss], wrong: Mapping[Any, Sequence[float] | None]) -> dict:
    """Option-normalised probability (Real Authors, World Facts).

    ``Prob = mean_i p̄(a_i) / (p̄(a_i) + Σ_j p̄(w_ij) + 1e-10)``; the 1e-10 is open-unlearning's.
    """
    _same_indices(correct, wrong, "probability_w_options")
    by_index, kept = {}, []
    for idx in correct:
        c, w = correct[idx], wrong[idx]
        if not (_is_valid(c) and _is_valid(w)):
            by_index[idx] = {"prob": None}
            continue
        pc = math.exp(-float(c))
        pw = sum(math.exp(-float(x)) for x in w)
        by_index[idx] = {"prob": pc / (pc + pw + 1e-10)}
        kept.append(by_index[idx]["prob"])
    return {"agg_value": _mean(kept), "value_by_index": by_index}


TRUTH_RATIO_FORMS = ("ou_epsilon", "exact")


def truth_ratio_value(
    correct_loss: float,
    wrong_losses: Sequence[float],
    *,
    wrong_mean: str = "geometric",
    form: str = "exact",
) -> float:
    """``R`` for one item: the wrong answers' mean per-token probability over the correct one's.

    ``wrong_mean``: ``geometric`` (orig's ``aggregate_eval_stat.py`` and open-unlearning) averages the
    wrong answers' losses, ``p̄_w = exp(-mean_j L_wj)``; ``arithmetic`` (the paper's formula, orig's
    in-training MU) averages their probabilities, ``p̄_w = (1/m) Σ_j exp(-L_wj)``. AM ≥ GM.

    ``form``: ``exact`` computes ``R = p̄_w / p̄_c`` in log space (clipped at ``exp(±700)``);
    ``ou_epsilon`` is open-unlearning's ``p̄_w / (p̄_c + 1e-10)`` in float64, which differs where the
    correct answer's probability nears 1e-10 (collapsed models: R saturates at ``p̄_w·1e10``).
    """
    lw = np.asarray(wrong_losses, dtype=np.float64)
    if wrong_mean == "geometric":
        log_pw = float(-lw.mean())
    elif wrong_mean == "arithmetic":
        x = -lw
        log_pw = float(x.max() + np.log(np.exp(x - x.max()).sum()) - np.log(len(x)))
    else:
        raise ValueError(f"`wrong_mean` must be 'geometric' or 'arithmetic', got {wrong_mean!r}")
    if form == "ou_epsilon":
        return math.exp(log_pw) / (math.exp(-float(correct_loss)) + 1e-10)
    if form != "exact":
        raise ValueError(f"`truth_ratio_form` must be one of {TRUTH_RATIO_FORMS}, got {form!r}")
    log_r = float(correct_loss) + log_pw
    return math.exp(min(max(log_r, -_MAX_LOG_RATIO), _MAX_LOG_RATIO))


def closer_to_1_better(r: np.ndarray) -> float:
    """Forget set: ``mean_i min(R_i, 1/(R_i + 1e-10))`` (open-unlearning's guard), range (0, 1]."""
    return float(np.mean(np.minimum(r, 1 / (r + 1e-10))))


def true_better(r: np.ndarray) -> float:
    """Retain, Real Authors, World Facts: ``mean_i max(0, 1 - R_i)``, range [0, 1]."""
    return float(np.mean(np.maximum(0.0, 1 - r)))


def prob_mean(r: np.ndarray) -> float:
    """open-unlearning's optional ``prob_mean``: ``mean_i p̄(c)/(p̄(c) + exp(-mean_j L_wj)) = mean_i 1/(1+R_i)``."""
    return float(np.mean(1 / (1 + r)))


TRUTH_RATIO_AGGREGATORS = {
    "closer_to_1_better": closer_to_1_better,
    "true_better": true_better,
    "prob_mean": prob_mean,
}


@register_metric("truth_ratio")
def truth_ratio(
    correct: Mapping[Any, Loss],
    wrong: Mapping[Any, Sequence[float] | None],
    *,
    aggregator: str = "closer_to_1_better",
    wrong_mean: str = "geometric",
    form: str = "exact",
) -> dict:
    """Truth Ratio: per index ``{"score": R}`` (R = wrong/correct, open-unlearning's direction).

    ``agg_value`` is ``aggregator`` over the valid R values: ``closer_to_1_better`` for the forget
    set, ``true_better`` for the others (see :data:`TRUTH_RATIO_AGGREGATORS`). ``wrong_mean`` and
    ``form``: see :func:`truth_ratio_value`.
    """
    if aggregator not in TRUTH_RATIO_AGGREGATORS:
        raise ValueError(
            f"unknown truth-ratio aggregator {aggregator!r}; choose one of {sorted(TRUTH_RATIO_AGGREGATORS)}"
        )
    _same_indices(correct, wrong, "truth_ratio")
    by_index, kept = {}, []
    for idx in correct:
        c, w = correct[idx], wrong[idx]
        if not (_is_valid(c) and _is_valid(w)):
            by_index[idx] = {"score": None}
            continue
        r = truth_ratio_value(float(c), [float(x) for x in w], wrong_mean=wrong_mean, form=form)
        by_index[idx] = {"score": r}
        kept.append(r)
    agg = TRUTH_RATIO_AGGREGATORS[aggregator](np.asarray(kept)) if kept else None
    return {"agg_value": agg, "value_by_index": by_index}


_SCORERS: dict[bool, rouge_scorer.RougeScorer] = {}


class _StemmingTokenizer(rouge_tokenizers.Tokenizer):
    """``rouge_score``'s ``DefaultTokenizer(use_stemmer=True)`` whose Porter stemmer (NLTK's, what
    ``rouge_score`` stems with) remembers each word's stem: an eval scores the same few thousand words
    again and again, and stemming was half of ROUGE's time. The tokenizer is its own stemmer (``stem``)."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self.stem = functools.lru_cache(maxsize=2**16)(porter.PorterStemmer().stem)

    def tokenize(self, text: str) -> list[str]:
        return rouge_tokenize.tokenize(text, self)


def rouge_scores(reference: str, generation: str, *, use_stemmer: bool = True) -> dict[str, float]:
    """``rouge_score``'s ROUGE-1/ROUGE-L (sentence-level LCS) with ``score(target=reference, prediction=generation)``."""
    if use_stemmer not in _SCORERS:
        tokenizer = _StemmingTokenizer() if use_stemmer else None
        _SCORERS[use_stemmer] = rouge_scorer.RougeScorer(["rouge1", "rougeL"], tokenizer=tokenizer)
    s = _SCORERS[use_stemmer].score(reference, generation)
    return {
        "rouge1_recall": s["rouge1"].recall,
        "rougeL_f1": s["rougeL"].fmeasure,
        "rougeL_recall": s["rougeL"].recall,
    }


@register_metric("rouge")
def rouge(
    generations: Mapping[Any, str],
    references: Mapping[Any, str],
    *,
    rouge_type: str = "rougeL_recall",
    use_stemmer: bool = True,
    inputs: Mapping[Any, str] | None = None,
) -> dict:
    """``mean_i rouge_type(reference_i, generation_i)``; TOFU reports ``rougeL_recall``.

    Per index, as open-unlearning: ``rouge1_recall``, ``rougeL_f1``, ``rougeL_recall``, ``input``,
    ``ground_truth``, ``generation``. ``None`` generations are invalid items.
    """
    _same_indices(generations, references, "rouge")
    by_index, kept = {}, []
    for idx in references:
        gen, ref = generations[idx], references[idx]
        entry = {"rouge1_recall": None, "rougeL_f1": None, "rougeL_recall": None}
        if gen is not None and ref is not None:
            entry = rouge_scores(ref, gen, use_stemmer=use_stemmer)
            kept.append(entry[rouge_type])
        entry.update({"input": (inputs or {}).get(idx), "ground_truth": ref, "generation": gen})
        by_index[idx] = entry
    return {"agg_value": _mean(kept), "value_by_index": by_index}


def ks_pvalue(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided two-sample Kolmogorov–Smirnov p-value, ``scipy.stats.ks_2samp`` defaults."""
    return float(ks_2samp(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).pvalue)


def scores_of(result: Mapping) -> list[float]:
    """The valid ``score`` values of a truth-ratio result (``value_by_index[idx]["score"]``)."""
    out = []
    for entry in result["value_by_index"].values():
        if isinstance(entry, Mapping) and entry.get("score") is not None:
            out.append(float(entry["score"]))
    return out


@register_metric("ks_test")
def forget_quality(forget_truth_ratio: Mapping, reference_truth_ratio: Mapping | None) -> dict:
    """Forget Quality: KS p-value between the R values of the model and of the retain model.

    Both arguments are ``truth_ratio`` results on the same forget items. KS is invariant under any
    strictly monotone map, so R, 1/R (orig) and log R give the same p-value. Without a reference the
    value is ``None`` (as open-unlearning). Invalid items are dropped from each sample.
    """
    if reference_truth_ratio is None:
        return {"agg_value": None}
    a, b = scores_of(forget_truth_ratio), scores_of(reference_truth_ratio)
    if not a or not b:
        return {"agg_value": None}
    return {"agg_value": ks_pvalue(a, b)}


def harmonic_mean(values: Sequence[float]) -> float:
    """``HM = n / Σ_k 1/v_k``; 0 when any ``v_k`` is 0 (as ``scipy.stats.hmean``)."""
    vals = [float(v) for v in values]
    if any(v < 0 for v in vals):
        raise ValueError(f"harmonic mean needs non-negative values, got {vals}")
    if any(v == 0 for v in vals):
        return 0.0
    return len(vals) / sum(1 / v for v in vals)


@register_metric("hm_aggregate")
def model_utility(components: Mapping[str, float | None]) -> dict:
    """Model Utility: harmonic mean of the 9 numbers in :data:`MODEL_UTILITY_COMPONENTS`.

    ``None`` when a component is missing or undefined (no valid items).
    """
    missing = [k for k in MODEL_UTILITY_COMPONENTS if k not in components]
    if missing:
        raise ValueError(f"model utility needs all 9 components; missing {missing}")
    vals = [components[k] for k in MODEL_UTILITY_COMPONENTS]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
        return {"agg_value": None}
    return {"agg_value": harmonic_mean(vals)}


def _same_indices(a: Mapping, b: Mapping, name: str) -> None:
    if list(a) != list(b):
        raise ValueError(f"{name}: the two inputs must have the same indices in the same order")
