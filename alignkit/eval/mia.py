"""Membership-inference attacks (MIA) on causal LMs: LOSS, ZLib, Min-K%, Min-K%++, GradNorm, and AUC.

Spec: ``shared/design/benchmarks.md`` §3.3.3 (MUSE PrivLeak) and §4 (open-unlearning's MIAs).

Conventions, identical to open-unlearning (OU, ``src/evals/metrics/mia/``):

* every per-item **score is "higher = less member-like"** (for Min-K% that is ``s(x) = -MinK(x)``);
* ``auc`` labels forget (members) 0 and holdout (non-members) 1 and scores with ``s``, so
  ``AUC = P[s(h) > s(f)] + 1/2 P[tie]``. AUC -> 1 means the forget set is clearly recognised as seen.
  This is the usual ROC convention with members as positives and ``MinK`` as the score; MUSE's own
  convention is its complement (``1 - AUC``, see :func:`privleak`).

The attacks themselves are pure functions of per-token statistics, so they are tested on hand-made
inputs. :func:`text_token_stats` computes those statistics for raw text in one forward pass (the
log-prob of every scored token and, for Min-K%++, the mean and variance of ``log p`` under the
model's next-token distribution); :func:`run_mia` strings the two together and returns OU's log
layout (``agg_value``, ``forget``/``holdout`` ``value_by_index``).

Which tokens are scored (raw text, "labels = input_ids"): the text is tokenized with
``add_special_tokens=True`` and every token after the first is scored, so with a BOS tokenizer every
text token is scored and without one the first text token only serves as context. OU additionally
truncates to ``n_prefix + max_tokens`` ids and, for the log-prob attacks, drops the last scored token
(its helper assumes it is EOS; §5 item 10); both are arguments here, set by the protocol.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from alignkit.models.head import forward_states, position_stats

MinKCount = Literal["at_least_one", "floor"]
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm")
# OU's metric names, used as keys of the eval log.
METRIC_NAMES = {a: f"mia_{a}" for a in ATTACKS}
# Min-K++ clamps the per-position variance from below before dividing (OU: ``clamp(min=1e-6)``).
MIN_K_PP_VAR_FLOOR = 1e-6


def _as_array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


# --------------------------------------------------------------------------------------------------
# Pure per-item scores
# --------------------------------------------------------------------------------------------------


def min_k_count(n: int, k: float, rule: MinKCount = "at_least_one") -> int:
    """How many of ``n`` token scores Min-K% averages.

    ``at_least_one`` (OU): ``max(1, floor(k*n))``. ``floor`` (MUSE-orig and the Min-K% paper code):
    ``floor(k*n)``, which is 0 for short texts (n < 3 at k = 0.4) and then gives an empty mean.
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"`k` must be in (0, 1], got {k}.")
    m = int(n * k)
    if rule == "at_least_one":
        return max(1, m) if n > 0 else 0
    if rule == "floor":
        return m
    raise ValueError(f"Unknown Min-K count rule {rule!r}; use 'at_least_one' (OU) or 'floor' (MUSE-orig).")


def _bottom_k_mean(values: np.ndarray, k: float, rule: MinKCount) -> float:
    m = min_k_count(values.size, k, rule)
    if m == 0:
        return math.nan  # the empty mean of MUSE-orig; callers turn it into an error naming the item
    return float(np.sort(values)[:m].mean())


def loss_score(token_logps) -> float:
    """LOSS attack: the average NLL ``L = -(1/T) sum_t log p(x_t | x_<t)`` over the scored tokens."""
    lp = _as_array(token_logps)
    return float(-lp.mean()) if lp.size else math.nan


def zlib_score(token_logps, text: str) -> float:
    """ZLib attack (Carlini et al. 2021): ``L / len(zlib.compress(text.encode("utf-8")))``.

    ``text`` is the decoded scored tokens (OU decodes the labels with ``skip_special_tokens=True``).
    The ``max(., 1)`` guard matches OU; ``zlib`` output is never empty in practice.
    """
    return loss_score(token_logps) / max(len(zlib.compress(text.encode("utf-8"))), 1)


def min_k_score(token_logps, k: float = 0.4, *, count: MinKCount = "at_least_one") -> float:
    """Min-K% Prob (Shi et al. 2023, arXiv:2310.16789), stored negated as OU and MUSE do.

    ``MinK(x) = (1/m) * sum of the m smallest log p(x_t | x_<t)``, ``m`` from :func:`min_k_count`;
    returns ``s(x) = -MinK(x)`` (higher = less member-like). NaN when ``m = 0`` (``floor`` rule).
    """
    return -_bottom_k_mean(_as_array(token_logps), k, count)


def min_k_plus_plus_score(
    token_logps, mu, var, k: float = 0.4, *, count: MinKCount = "at_least_one"
) -> float:
    """Min-K%++ (Zhang et al. 2024, arXiv:2404.02936), as OU computes it.

    Per token ``z_t = (l_t - mu_t) / sqrt(max(var_t, 1e-6))`` with ``mu_t = sum_v p_v log p_v`` and
    ``var_t = sum_v p_v (log p_v)^2 - mu_t^2`` under the model's next-token distribution ``p``.
    Returns ``-mean`` of the ``m`` smallest ``z_t``.
    """
    lp, mu, var = _as_array(token_logps), _as_array(mu), _as_array(var)
    if not lp.shape == mu.shape == var.shape:
        raise ValueError(
            f"token_logps, mu and var must have one value per token; got {lp.shape}, {mu.shape}, {var.shape}."
        )
    z = (lp - mu) / np.sqrt(np.maximum(var, MIN_K_PP_VAR_FLOOR))
    return -_bottom_k_mean(z, k, count)


# --------------------------------------------------------------------------------------------------
# AUC and PrivLeak
# --------------------------------------------------------------------------------------------------


def auc(negatives, positives) -> float:
    """Area under the ROC curve: ``P[pos > neg] + 1/2 P[pos == neg]`` over all (neg, pos) pairs.

    Computed from average ranks (the Mann-Whitney U statistic), which equals
    ``sklearn.metrics.roc_auc_score`` with label 1 for ``positives``.
    """
    neg, pos = _as_array(negatives), _as_array(positives)
    if neg.size == 0 or pos.size == 0:
        raise ValueError(f"AUC needs at least one item of each class; got {neg.size} and {pos.size}.")
    if not (np.isfinite(neg).all() and np.isfinite(pos).all()):
        raise ValueError("AUC got a NaN or infinite score; every item must have a finite score.")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([neg, pos]))  # ties get their average rank
    u = ranks[neg.size :].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (neg.size * pos.size))


def mia_auc(forget_scores, holdout_scores) -> float:
    """OU's MIA AUC: forget labelled 0, holdout 1, "higher = less member-like" scores.

    ``= P[s(holdout) > s(forget)] + 1/2 P[tie]``; 1.0 when every forget item looks more member-like
    than every holdout item, 0.5 when the two are indistinguishable.
    """
    return auc(forget_scores, holdout_scores)


def privleak(auc_model: float, auc_retrain: float, *, eps: float = 1e-10) -> float:
    """MUSE PrivLeak in percent, from two MIA AUCs in OU's (usual) convention.

    MUSE defines ``AUC_MUSE = 1 - AUC`` (forget 0, holdout 1, score ``MinK``: a model that memorised
    the forget set gets ``AUC_MUSE ~ 0``, a model that never saw it ``~ 0.5``) and

        PrivLeak = (AUC_MUSE(model) - AUC_MUSE(retrain)) / (AUC_MUSE(retrain) + eps) * 100
                 = (AUC(retrain) - AUC(model)) / (1 - AUC(retrain) + eps) * 100.

    0 for a model that leaks like the retrained one; **negative** when the model still recognises the
    forget set (under-unlearned; the target model is about -100 on MUSE-News); positive when it
    treats the forget set as less familiar than the retrained model does (over-unlearned). OU adds
    ``eps = 1e-10`` to the denominator, MUSE-orig adds nothing (``eps = 0``; a retrain AUC_MUSE of 0
    then gives an infinite or NaN value, which is returned as is). Plugging the usual AUC straight
    into the MUSE formula gives the wrong sign and denominator (§3.3.3 item 4).
    """
    a_model, a_ret = 1.0 - float(auc_model), 1.0 - float(auc_retrain)
    num, den = a_model - a_ret, a_ret + eps
    if den == 0.0:
        return math.nan if num == 0.0 else math.copysign(math.inf, num)
    return num / den * 100.0


# --------------------------------------------------------------------------------------------------
# Per-token statistics of raw text (one forward pass)
# --------------------------------------------------------------------------------------------------


@dataclass
class TextTokenStats:
    """Per-token statistics of one text, for the scored tokens ``x_2..x_N`` (see module docstring).

    ``token_logps[t] = log p(x_t | x_<t)``; ``mu``/``var`` are the mean and variance of ``log p(v)``
    for ``v ~ p(. | x_<t)`` (``None`` when not requested). All float32, on CPU.
    """

    token_logps: torch.Tensor  # [T]
    target_ids: list[int]
    mu: torch.Tensor | None = None  # [T]
    var: torch.Tensor | None = None  # [T]

    def drop_last(self) -> TextTokenStats:
        """The same statistics without the last scored token (OU's ``T'``)."""
        cut = slice(0, max(len(self.target_ids) - 1, 0))
        return TextTokenStats(
            self.token_logps[cut],
            self.target_ids[cut],
            None if self.mu is None else self.mu[cut],
            None if self.var is None else self.var[cut],
        )


def raw_text_ids(tokenizer, text: str, *, max_tokens: int | None = None) -> tuple[list[int], int]:
    """``(input_ids, n_context)`` for scoring raw text: ``labels = input_ids`` with the first
    ``n_context`` positions masked.

    ``input_ids = tokenize(text, add_special_tokens=True)``. ``n_context = max(1, n_prefix)`` with
    ``n_prefix = len(tokenize("", add_special_tokens=True))`` (the BOS, if any): the first position can
    never be predicted. With ``max_tokens`` the ids are cut to ``n_prefix + max_tokens``, exactly as
    OU's ``preprocess_pretraining_instance`` does for an empty prefix.
    """
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    n_prefix = len(tokenizer("", add_special_tokens=True)["input_ids"])
    if max_tokens is not None:
        ids = ids[: n_prefix + max_tokens]
    return ids, max(1, n_prefix)


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@torch.no_grad()
def text_token_stats(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_tokens: int | None = None,
    vocab_stats: bool = True,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[TextTokenStats]:
    """Teacher-forced statistics of raw ``texts`` under ``model``, one forward per batch.

    Token selection follows :func:`raw_text_ids`. Logits are upcast to float32 before the
    log-softmax (the models usually run in bf16). The LM head runs on a chunk of positions at a time
    and every statistic is reduced per chunk (:mod:`alignkit.models.head`), so memory does not grow
    with length x vocabulary. Right padding with an attention mask; padding
    does not change the values of real positions under a causal mask. ``progress(n)`` is called
    with the number of texts finished after each batch.
    """
    device = _model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    encoded = [raw_text_ids(tokenizer, t, max_tokens=max_tokens) for t in texts]
    out: list[TextTokenStats] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (ids, _) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        x, head = forward_states(model, input_ids.to(device), attention.to(device))
        for row, (ids, n_ctx) in enumerate(chunk):
            n = len(ids)
            if n <= n_ctx:
                out.append(
                    TextTokenStats(
                        torch.zeros(0),
                        [],
                        torch.zeros(0) if vocab_stats else None,
                        torch.zeros(0) if vocab_stats else None,
                    )
                )
                continue
            # Position t-1 predicts token t: positions n_ctx-1 .. n-2 score ids[n_ctx : n].
            target = torch.tensor(ids[n_ctx:], device=x.device)
            token_logps, mu, var, _ = position_stats(
                x[row, n_ctx - 1 : n - 1], head, target, vocab_stats=vocab_stats
            )
            if vocab_stats:
                mu, var = mu.cpu(), var.cpu()
            out.append(TextTokenStats(token_logps.cpu(), ids[n_ctx:], mu, var))
        if progress is not None:
            progress(len(chunk))
    return out


def gradnorm_scores(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    p: float = 2.0,
    max_tokens: int | None = None,
    drop_last_token: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """GradNorm attack as OU's ``mia_gradnorm`` (p = 2, one item at a time).

    For each text: ``loss = -(1/|T'|) sum_{t in T'} log p(x_t | x_<t)``, backpropagate, take the
    ``p``-norm of each parameter tensor's gradient and **average those norms over the tensors**
    (not one global norm). Like OU, the model is in ``train()`` mode while this runs (restored
    afterwards) and existing ``.grad`` are cleared. One backward per text: expensive on large models.
    """
    if p not in (1, 2, 1.0, 2.0, math.inf):
        raise ValueError(f"GradNorm `p` must be 1, 2 or inf, got {p}.")
    device = _model_device(model)
    was_training = model.training
    params = [q for q in model.parameters() if q.requires_grad]
    scores: list[float] = []
    model.train()
    try:
        for text in texts:
            ids, n_ctx = raw_text_ids(tokenizer, text, max_tokens=max_tokens)
            n_scored = len(ids) - n_ctx - (1 if drop_last_token else 0)
            if n_scored <= 0:
                scores.append(math.nan)
            else:
                model.zero_grad(set_to_none=True)
                x = torch.tensor([ids], device=device)
                logits = model(input_ids=x).logits[0, n_ctx - 1 : n_ctx - 1 + n_scored].float()
                target = x[0, n_ctx : n_ctx + n_scored]
                loss = -torch.log_softmax(logits, dim=-1).gather(-1, target[:, None]).mean()
                loss.backward()
                norms = [q.grad.detach().float().norm(p=p) for q in params if q.grad is not None]
                scores.append(float(torch.stack(norms).mean()))
            if progress is not None:
                progress(1)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return scores


# --------------------------------------------------------------------------------------------------
# Runner: statistics -> scores -> AUC, in OU's log layout
# --------------------------------------------------------------------------------------------------


def attack_scores(
    stats: Sequence[TextTokenStats],
    attack: str,
    *,
    tokenizer=None,
    k: float = 0.4,
    min_k_rule: MinKCount = "at_least_one",
    drop_last_token: bool = True,
) -> list[float]:
    """Per-item scores of one log-prob attack over precomputed :class:`TextTokenStats`.

    LOSS and ZLib use every scored token ``T`` (OU scores them with its full-label loss); Min-K% and
    Min-K%++ use ``T'`` (``T`` without its last token) when ``drop_last_token`` (OU), else ``T``.
    ZLib needs ``tokenizer`` to decode the scored tokens.
    """
    scores = []
    for st in stats:
        short = st.drop_last() if drop_last_token else st
        if attack == "loss":
            scores.append(loss_score(st.token_logps))
        elif attack == "zlib":
            if tokenizer is None:
                raise ValueError("The zlib attack needs `tokenizer` to decode the scored tokens.")
            text = tokenizer.decode(st.target_ids, skip_special_tokens=True)
            scores.append(zlib_score(st.token_logps, text))
        elif attack == "min_k":
            scores.append(min_k_score(short.token_logps, k, count=min_k_rule))
        elif attack == "min_k_plus_plus":
            if short.mu is None or short.var is None:
                raise ValueError(
                    "Min-K%++ needs vocabulary statistics: call text_token_stats(vocab_stats=True)."
                )
            scores.append(min_k_plus_plus_score(short.token_logps, short.mu, short.var, k, count=min_k_rule))
        else:
            raise ValueError(
                f"Unknown log-prob attack {attack!r}; choose from loss, zlib, min_k, min_k_plus_plus."
            )
    return scores


def _check_finite(scores: Sequence[float], split: str, attack: str) -> None:
    bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
    if bad:
        raise ValueError(
            f"MIA {attack}: {split} item(s) {bad[:10]} have no score (too few scored tokens: the text is "
            "empty or shorter than the Min-K count needs). Remove those items or use the 'at_least_one' "
            "Min-K count rule."
        )


def split_log(scores: Sequence[float]) -> dict:
    """OU's per-split layout: ``{"agg_value": mean score, "value_by_index": {"i": {"score": s}}}``."""
    return {
        "agg_value": float(np.mean(scores)) if len(scores) else None,
        "value_by_index": {str(i): {"score": float(s)} for i, s in enumerate(scores)},
    }


def auc_log(forget_scores: Sequence[float], holdout_scores: Sequence[float], attack: str, **extra) -> dict:
    """OU's ``mia_*`` entry: AUC under ``agg_value`` and ``auc``, per-item scores per split."""
    _check_finite(forget_scores, "forget", attack)
    _check_finite(holdout_scores, "holdout", attack)
    value = mia_auc(forget_scores, holdout_scores)
    return {
        "agg_value": value,
        "auc": value,
        "forget": split_log(forget_scores),
        "holdout": split_log(holdout_scores),
        **extra,
    }


def run_mia(
    model,
    tokenizer,
    forget_texts: Sequence[str],
    holdout_texts: Sequence[str],
    *,
    attacks: Sequence[str] = ("loss", "zlib", "min_k", "min_k_plus_plus"),
    k: float = 0.4,
    min_k_rule: MinKCount = "at_least_one",
    max_tokens: int | None = 2048,
    drop_last_token: bool = True,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict]:
    """Run MIAs on raw forget (members) vs holdout (non-members) texts; OU's log layout per attack.

    Returns ``{"mia_<attack>": {"agg_value": AUC, "auc": AUC, "forget": {...}, "holdout": {...}}}``.
    All log-prob attacks share one forward pass per batch; ``gradnorm`` adds one backward per text.
    The defaults are OU's MUSE settings (k = 0.4, 2048 tokens, last token dropped).
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"Unknown MIA attack(s) {unknown}; choose from {', '.join(ATTACKS)}.")
    logprob_attacks = [a for a in attacks if a != "gradnorm"]
    logs: dict[str, dict] = {}
    if logprob_attacks:
        need_vocab = "min_k_plus_plus" in logprob_attacks
        stats = {
            split: text_token_stats(
                model,
                tokenizer,
                texts,
                max_tokens=max_tokens,
                vocab_stats=need_vocab,
                batch_size=batch_size,
                progress=progress,
            )
            for split, texts in (("forget", forget_texts), ("holdout", holdout_texts))
        }
        for attack in logprob_attacks:
            scores = {
                split: attack_scores(
                    st,
                    attack,
                    tokenizer=tokenizer,
                    k=k,
                    min_k_rule=min_k_rule,
                    drop_last_token=drop_last_token,
                )
                for split, st in stats.items()
            }
            extra = {"k": k} if attack in ("min_k", "min_k_plus_plus") else {}
            logs[METRIC_NAMES[attack]] = auc_log(scores["forget"], scores["holdout"], attack, **extra)
    if "gradnorm" in attacks:
        scores = {
            split: gradnorm_scores(
                model,
                tokenizer,
                texts,
                max_tokens=max_tokens,
                drop_last_token=drop_last_token,
                progress=progress,
            )
            for split, texts in (("forget", forget_texts), ("holdout", holdout_texts))
        }
        logs[METRIC_NAMES["gradnorm"]] = auc_log(scores["forget"], scores["holdout"], "gradnorm", p=2)
    return logs
