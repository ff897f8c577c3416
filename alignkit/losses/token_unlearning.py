"""Token-level unlearning losses of ``methods-unlearning-2.md``: UNDIAL, WGA, SatImp and CE-U.

Pure functions of tensors (cited below as "spec2 §n"). Conventions as in :mod:`alignkit.losses.unlearning`:
``logits``/``token_logps`` are already shifted (position ``t`` scores ``labels[:, t]``), ``mask`` marks the
answer tokens that count, token means are over the whole micro-batch. Every loss is minimised; the
trainer adds ``gamma * L_forget + alpha * L_retain``.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch

from alignkit.losses.core import (
    LossOutput,
    _check_positive,
    _check_same_shape,
    _detached,
    _fill_masked,
    _log_softmax,
    _soft_target_grad,
    _upcast,
    token_mean,
)
from alignkit.models.head import mean_positions

__all__ = ["ceu_loss", "satimp_loss", "undial_loss", "wga_loss"]


def _undial_target(ref_logits, labels, is_answer, beta: float) -> torch.Tensor:
    """UNDIAL's target ``q`` (see :func:`undial_loss`), ``[M, V]``, detached."""
    teacher = _upcast(ref_logits).detach()
    hit = torch.zeros_like(teacher, dtype=torch.bool)
    hit = hit.scatter(-1, labels.long().clamp_min(0).unsqueeze(-1), True)
    return torch.softmax(teacher - beta * (hit & is_answer.unsqueeze(-1)).to(teacher.dtype), dim=-1)


def _undial_terms(logits, ref_logits, labels, is_answer, *, beta: float) -> torch.Tensor:
    """UNDIAL's per-position cross-entropy ``ce_t`` (see :func:`undial_loss`), ``[M, V]`` -> ``[M]``."""
    return -(_undial_target(ref_logits, labels, is_answer, beta) * _log_softmax(logits)).sum(-1)


def _undial_terms_grad(logits, ref_logits, labels, is_answer, *, beta: float):
    """``(_undial_terms, their gradient [M, V] with respect to logits, the log-softmax)``, for
    ``mean_positions``."""
    target, logp = _undial_target(ref_logits, labels, is_answer, beta), _log_softmax(logits)
    return -(target * logp).sum(-1), _soft_target_grad(logp, target), logp


def undial_loss(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    positions: Literal["all", "labels"] = "all",
) -> LossOutput:
    """UNDIAL, self-distillation with adjusted logits (Dong et al., arXiv 2402.10052; spec2 §3).

    Target ``q = softmax(z_ref - beta * e_y)`` at answer positions (the teacher's logit of the true next
    token lowered by ``beta``), the plain teacher ``softmax(z_ref)`` elsewhere; ``ce_t = -sum_v q_v log
    softmax(z)_v``. ``positions="all"`` (default, open-unlearning's reduction) averages ``ce`` over every
    position of the given tensors, prompt and padding included (OU without its index ``-100`` wrap
    artefact); ``"labels"`` is the token mean over answer positions. ``logits``, ``ref_logits``: ``[N, T, V]``
    tensors or :class:`~alignkit.models.head.HeadLogits` (then a chunk of positions at a time; the
    reference is the frozen teacher, detached here); ``labels``, ``mask``: ``[N, T]``.
    """
    _check_positive("beta", beta)
    if positions not in ("all", "labels"):
        raise ValueError(f"`positions` must be 'all' or 'labels', got {positions!r}.")
    _check_same_shape(logits=logits, ref_logits=ref_logits)
    mask = mask.bool()
    rows = None if positions == "all" else mask
    loss = mean_positions(
        partial(_undial_terms, beta=beta),
        (logits, ref_logits),
        rows,
        (labels, mask),
        value_and_grad=partial(_undial_terms_grad, beta=beta),
    )
    answer_share = mask.float().mean() if positions == "all" else torch.ones(())
    return LossOutput(loss, _detached({"forget/undial": loss, "forget/answer_share": answer_share}))


def _confidence_weighted_ascent(token_logps, mask, weight_fn, name):
    """``L = (1/N) sum m_t w_t logp_t`` with ``w_t = weight_fn(p_t)`` detached (a re-weighted GA step)."""
    logp = _fill_masked(token_logps, mask)
    weight = weight_fn(logp.detach().exp())
    loss = token_mean(weight * logp, mask)
    metrics = {
        f"forget/{name}": loss,
        f"forget/{name}_weight": token_mean(weight, mask),
        "forget/nll": -token_mean(logp, mask),
    }
    return LossOutput(loss, _detached(metrics))


def wga_loss(token_logps: torch.Tensor, mask: torch.Tensor, *, beta: float = 1.0) -> LossOutput:
    """WGA, weighted gradient ascent (Wang et al., arXiv 2502.19301; spec2 §4).

    ``L = (1/N) sum_t m_t p_t^beta logp_t`` with the weight ``p_t^beta`` detached, so the gradient wrt
    ``logp_t`` is ``p_t^beta / N``: already-forgotten tokens stop being pushed. ``beta = 0`` is GA.
    Inputs ``[N, T]``; token mean over the micro-batch.
    """
    if beta < 0:
        raise ValueError(f"`beta` must be >= 0, got {beta!r}.")
    return _confidence_weighted_ascent(token_logps, mask, lambda p: p**beta, "wga")


def satimp_loss(
    token_logps: torch.Tensor, mask: torch.Tensor, *, beta1: float = 5.0, beta2: float = 1.0
) -> LossOutput:
    """SatImp, saturation x importance re-weighted ascent (Yang et al., arXiv 2505.11953; spec2 §5).

    ``L = (1/N) sum_t m_t p_t^beta1 (1 - p_t)^beta2 logp_t``, the weight detached: ``p^beta1`` stops
    pushing unlikely tokens, ``(1-p)^beta2`` damps near-certain ones. Inputs ``[N, T]``; token mean.
    """
    if beta1 < 0 or beta2 < 0:
        raise ValueError(f"`beta1` and `beta2` must be >= 0, got {beta1!r} and {beta2!r}.")
    return _confidence_weighted_ascent(token_logps, mask, lambda p: p**beta1 * (1 - p) ** beta2, "satimp")


def _ceu_target(logp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE-U's target ``q`` (see :func:`ceu_loss`) from the log-probs, detached."""
    # The -inf scatter runs on a detached fp32 copy; the true token is excluded, so q stays finite.
    return torch.softmax(logp.detach().scatter(-1, labels.long().unsqueeze(-1), float("-inf")), dim=-1)


def _ceu_terms(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE-U's per-position cross-entropy ``ce_t`` (see :func:`ceu_loss`), ``[M, V]`` -> ``[M]``."""
    logp = _log_softmax(logits)
    return -(_ceu_target(logp, labels) * logp).sum(-1)


def _ceu_terms_grad(logits: torch.Tensor, labels: torch.Tensor):
    """``(_ceu_terms, their gradient [M, V] with respect to logits, the log-softmax)``, for
    ``mean_positions``."""
    logp = _log_softmax(logits)
    q = _ceu_target(logp, labels)
    return -(q * logp).sum(-1), _soft_target_grad(logp, q), logp


def ceu_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, *, ignore_first_n: int = 1
) -> LossOutput:
    """CE-U, cross-entropy unlearning (Yang, arXiv 2503.01224; spec2 §6).

    At each answer position the target is the detached current distribution with the true token removed,
    ``q_v = p_v / (1 - p_y)`` (``q_y = 0``), and ``ce_t = -sum_v q_v log softmax(z)_v``; gradient wrt the
    logits ``(softmax(z) - q) / N``, bounded at any confidence. The first ``ignore_first_n`` answer tokens
    of every row are dropped (the paper's footnote trick, default 1); then a token mean over the batch.
    ``logits`` ``[N, T, V]`` (or :class:`~alignkit.models.head.HeadLogits`), ``labels``/``mask`` ``[N, T]`` (shifted; position 0 is never an answer token,
    so counting answer tokens on the shifted mask equals counting them on the unshifted labels).
    """
    if not (isinstance(ignore_first_n, int) and ignore_first_n >= 0):
        raise ValueError(f"`ignore_first_n` must be an int >= 0, got {ignore_first_n!r}.")
    mask = mask.bool()
    kept = mask & (mask.long().cumsum(-1) > ignore_first_n)
    # no kept token: 0, no NaN
    loss = mean_positions(_ceu_terms, (logits,), kept, (labels,), value_and_grad=_ceu_terms_grad)
    return LossOutput(loss, _detached({"forget/ceu": loss, "forget/ceu_tokens": kept.sum().to(loss.dtype)}))
