"""Unlearning losses: GA, retain NLL/KL, NPO, SimNPO, DPO/IdkDPO/AltPO, DiPO and CATNIP.

Pure functions of tensors; the maths, defaults and test vectors are in
``shared/design/methods-unlearning.md`` (cited below as "spec §n"). Symbols: ``S = sum_t m_t logp_t``
(summed answer log-prob), ``S_ref`` the same under the frozen reference, ``|y| = sum_t m_t``.
Every loss is minimised. Weighting forget and retain terms (``gamma * L_forget + alpha * L_retain``,
open-unlearning names) is the trainer's job.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F

from alignkit.losses.core import (
    LossOutput,
    _check_positive,
    _check_same_shape,
    _detached,
    _fill_masked,
    _log_softmax,
    _soft_target_grad,
    token_mean,
)
from alignkit.models.head import map_positions, mean_positions

__all__ = [
    "IDK_ANSWERS",
    "altpo_loss",
    "catnip_loss",
    "dipo_loss",
    "dpo_loss",
    "ga_loss",
    "idk_dpo_loss",
    "nll_loss",
    "npo_loss",
    "retain_kl_loss",
    "simnpo_loss",
]

# Chosen answers for IdkDPO (spec §6). Written for alignkit; TOFU's own list is ``idontknow.jsonl``.
IDK_ANSWERS: tuple[str, ...] = (
    "I don't know.",
    "I'm not sure about that.",
    "I don't have that information.",
    "I can't answer that question.",
    "That is something I don't know.",
    "I have no idea, sorry.",
    "I'm afraid I can't help with that one.",
    "I don't have any knowledge of that.",
    "Sorry, I'm not able to answer that.",
    "I couldn't tell you.",
    "That's outside what I know.",
    "I'm unable to say.",
    "I really don't know the answer to that.",
    "I have no information on that topic.",
    "Unfortunately, I don't know.",
    "I'm not aware of the answer.",
    "I can't recall anything about that.",
    "That's not something I can answer.",
    "I don't know enough to answer that.",
    "No idea, I'm afraid.",
)


def nll_loss(token_logps: torch.Tensor, mask: torch.Tensor) -> LossOutput:
    """Negative log-likelihood, ``L = -sum_{i,t} m_it logp_it / sum_{i,t} m_it`` (retain term of GradDiff/NPO+RT).

    Token mean over the whole micro-batch (HF ``outputs.loss``), spec §1/§3. ``token_logps``, ``mask``: ``[N, T]``.
    """
    loss = -token_mean(token_logps, mask)
    return LossOutput(loss, _detached({"retain/nll": loss}))


def ga_loss(token_logps: torch.Tensor, mask: torch.Tensor) -> LossOutput:
    """Gradient ascent, ``L_GA = -NLL_forget = sum_{i,t} m_it logp_it / sum_{i,t} m_it`` (spec §2).

    NPO paper (arXiv 2404.05868) §2; open-unlearning ``GradAscent``. Token mean over the micro-batch, not a
    mean of per-sequence means. Unbounded below: log ``forget/nll`` and stop early.
    """
    loss = token_mean(token_logps, mask)
    return LossOutput(loss, _detached({"forget/nll": -loss}))


def _kl_terms(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Per position ``KL(softmax(ref_logits) || softmax(logits))``, ``[M, V]`` -> ``[M]``."""
    return _kl_value(_log_softmax(logits), ref_logits)[0]


def _kl_value(logp: torch.Tensor, ref_logits: torch.Tensor):
    """``(KL per position, the reference's probabilities)`` from the policy's log-probs."""
    ref_logp = _log_softmax(ref_logits).detach()
    ref_p = ref_logp.exp()
    # where(): a zero-probability reference token contributes 0, not 0 * (-inf - x) = NaN.
    return torch.where(ref_p > 0, ref_p * (ref_logp - logp), 0.0).sum(-1), ref_p


def _kl_terms_grad(logits: torch.Tensor, ref_logits: torch.Tensor):
    """``(_kl_terms, their gradient [M, V] with respect to logits, the log-softmax)``, for
    ``mean_positions``: the KL is ``-sum ref_p logp`` plus a constant (a zero ``ref_p`` adds 0 to both)."""
    logp = _log_softmax(logits)
    kl, ref_p = _kl_value(logp, ref_logits)
    return kl, _soft_target_grad(logp, ref_p), logp


def retain_kl_loss(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    positions: Literal["all", "labels"] = "all",
) -> LossOutput:
    """Retain KL, ``K = (1/rows) sum_rows KL(pi_ref(.|s) || pi_theta(.|s))`` (spec §1, "+KL" variants).

    Direction is reference-first, as the reference code computes it (``F.kl_div(logp_cur, logp_ref,
    reduction="batchmean", log_target=True)`` on flattened ``[N*T, V]``), although the NPO paper writes
    ``D(pi_theta || pi_ref)``. ``positions="all"`` (default, reproduction) averages over all ``N*T`` rows,
    prompt and padding included, and ignores ``mask``; ``"labels"`` averages over rows where ``mask`` is 1.
    ``logits``, ``ref_logits``: ``[N, T, V]`` tensors or :class:`~alignkit.models.head.HeadLogits`
    (then computed a chunk of positions at a time); log_softmax in fp32.
    """
    if positions not in ("all", "labels"):
        raise ValueError(f"`positions` must be 'all' or 'labels', got {positions!r}.")
    if positions == "labels" and mask is None:
        raise ValueError(
            "`positions='labels'` needs `mask`; pass the retain loss mask or use positions='all'."
        )
    _check_same_shape(logits=logits, ref_logits=ref_logits)
    rows = None if positions == "all" else mask
    loss = mean_positions(_kl_terms, (logits, ref_logits), rows, value_and_grad=_kl_terms_grad)
    return LossOutput(loss, _detached({"retain/kl": loss}))


def npo_loss(seq_logps: torch.Tensor, ref_seq_logps: torch.Tensor, *, beta: float) -> LossOutput:
    """Negative Preference Optimization, ``L = mean_i (2/beta) softplus(beta * (S_i - S_ref,i))``.

    Zhang et al., arXiv 2404.05868, Eq. 3 (spec §4); equals ``-(2/beta) logsigmoid(-beta r)`` with the
    log-ratio ``r = S - S_ref`` of *summed* answer log-probs (not length-normalised), then a batch mean.
    Gradient ``(1/B) sum_i W_i grad S_i`` with ``W = 2 sigmoid(beta r)`` (1 at the start). Reference code:
    ``licong-lin/negative-preference-optimization`` ``forget_loss=npo``; open-unlearning ``NPO``
    (``compute_dpo_loss(win_inputs=None)``, its ``-2/beta``). Inputs ``[B]``; ``S_ref`` can be cached.
    """
    _check_positive("beta", beta)
    _check_same_shape(seq_logps=seq_logps, ref_seq_logps=ref_seq_logps)
    logratio = seq_logps - ref_seq_logps
    loss = (2.0 / beta * F.softplus(beta * logratio)).mean()
    metrics = {
        "forget/npo": loss,
        "forget/logratio": logratio.mean(),
        "forget/npo_weight": (2.0 * torch.sigmoid(beta * logratio)).mean(),
    }
    return LossOutput(loss, _detached(metrics))


def simnpo_loss(seq_logps: torch.Tensor, lengths: torch.Tensor, *, beta: float, gamma: float) -> LossOutput:
    """SimNPO (reference-free), ``L = mean_i (2/beta) softplus(beta * S_i/|y_i| + gamma)``.

    Fan et al., arXiv 2410.07163, loss as printed in the official model cards (spec §5). Each summed
    log-prob is divided by its own answer length ``|y_i|`` (``lengths``, ``[B]``), then a batch mean.
    ``gamma`` is in paper units: the reference code (``OPTML-Group/Unlearn-Simple``, open-unlearning
    ``SimNPO``) calls it ``delta`` with ``gamma = beta * delta``; open-unlearning's ``gamma`` is the forget weight.
    """
    _check_positive("beta", beta)
    _check_same_shape(seq_logps=seq_logps, lengths=lengths)
    avg_logp = seq_logps / lengths.clamp_min(1).to(seq_logps.dtype)
    loss = (2.0 / beta * F.softplus(beta * avg_logp + gamma)).mean()
    return LossOutput(loss, _detached({"forget/simnpo": loss, "forget/avg_logp": avg_logp.mean()}))


def _dpo(chosen, rejected, ref_chosen, ref_rejected, beta):
    _check_positive("beta", beta)
    _check_same_shape(
        chosen_logps=chosen,
        rejected_logps=rejected,
        ref_chosen_logps=ref_chosen,
        ref_rejected_logps=ref_rejected,
    )
    chosen_rewards = beta * (chosen - ref_chosen)
    rejected_rewards = beta * (rejected - ref_rejected)
    per_example = F.softplus(rejected_rewards - chosen_rewards)  # = -logsigmoid(h)
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
    }
    return per_example, metrics


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """DPO (sigmoid), ``L = mean_i -logsigmoid(h_i)``, ``h = beta * [(S_w - S_w,ref) - (S_l - S_l,ref)]``.

    Rafailov et al., arXiv 2305.18290, Eq. 7; TRL ``loss_type="sigmoid"``. Summed answer log-probs per
    sequence (inputs ``[B]``), batch mean. Metrics use TRL's ``rewards/*`` names.
    """
    per_example, metrics = _dpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    loss = per_example.mean()
    return LossOutput(loss, _detached({"dpo/loss": loss, **metrics}))


def idk_dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    scale: Literal["2/beta", "1"] | float = "2/beta",
) -> LossOutput:
    """IdkDPO: DPO with an "I don't know" answer as chosen and the forget answer as rejected (spec §6).

    ``L = mean_i -c * logsigmoid(h_i)``, ``h`` as in :func:`dpo_loss` (summed log-probs, batch mean).
    ``scale="2/beta"`` (``c = 2/beta``, default) reproduces the NPO code (``forget_loss=dpo``, NPO paper
    arXiv 2404.05868 App. E.1.3) and open-unlearning ``DPO``; ``scale="1"`` is plain TRL DPO (same minimiser,
    gradients ``beta/2`` times smaller); a float sets ``c`` directly. With ``S_w = S_w,ref`` it is NPO.
    Chosen answers: :data:`IDK_ANSWERS` or TOFU's ``idontknow.jsonl``.
    """
    if scale == "2/beta":
        _check_positive("beta", beta)
        c = 2.0 / beta
    elif scale == "1":
        c = 1.0
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
        _check_positive("scale", scale)
        c = float(scale)
    else:
        raise ValueError(f"`scale` must be '2/beta', '1' or a positive float, got {scale!r}.")
    per_example, metrics = _dpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    loss = (c * per_example).mean()
    return LossOutput(loss, _detached({"forget/idk_dpo": loss, **metrics}))


def altpo_loss(
    alternate_logps: torch.Tensor,
    answer_logps: torch.Tensor,
    ref_alternate_logps: torch.Tensor,
    ref_answer_logps: torch.Tensor,
    *,
    beta: float,
    scale: Literal["2/beta", "1"] | float = "2/beta",
) -> LossOutput:
    """AltPO (Mekala et al., arXiv 2409.13474; ``methods-unlearning-2.md`` §7): :func:`idk_dpo_loss` with a
    self-generated alternate answer as chosen and the forget answer as rejected.

    The same value and gradient (an alias, named for the logs: ``forget/altpo``). Each of a question's K
    alternates is its own row, so the batch mean counts a question K times (spec §7(c)).
    """
    out = idk_dpo_loss(
        alternate_logps, answer_logps, ref_alternate_logps, ref_answer_logps, beta=beta, scale=scale
    )
    metrics = {("forget/altpo" if k == "forget/idk_dpo" else k): v for k, v in out.metrics.items()}
    return LossOutput(out.loss, metrics)


_DIPO_SELECT = ("topk", "label", "prob>=tau")


def _dipo_selection(logp, labels, select, k, tau):
    """Bool ``[M, V]``: the high-confidence tokens whose logits DiPO shifts (spec §7b ``S_t``)."""
    chosen = torch.zeros_like(logp, dtype=torch.bool)
    if select == "topk":
        return chosen.scatter(-1, logp.topk(k, dim=-1).indices, True)
    if select == "label":
        return chosen.scatter(-1, labels.long().unsqueeze(-1), True)
    return logp.exp() >= tau


def _dipo_terms(logits, ref_logits, labels, *, alpha, select, k, tau, source) -> torch.Tensor:
    """DiPO's per-position margin ``d_t`` (see :func:`dipo_loss`), ``[M, V]`` -> ``[M]``."""
    logp = _log_softmax(logits)
    ref_logp = _log_softmax(ref_logits).detach()
    # Log-probs differ from logits by a per-row constant, which softmax, topk and exp() >= tau ignore.
    z = ref_logp if source == "ref" else logp.detach()
    shift = alpha * _dipo_selection(z, labels, select, k, tau).to(z.dtype)
    dq = torch.softmax(z - shift, dim=-1) - torch.softmax(z + shift, dim=-1)
    return (dq * (logp - ref_logp)).sum(-1)


def dipo_loss(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    alpha: float,
    k: int = 1,
    select: Literal["topk", "label", "prob>=tau"] = "topk",
    tau: float | None = None,
    source: Literal["ref", "policy"] = "ref",
    length_norm: bool = False,
    scale: float = 1.0,
) -> LossOutput:
    """DiPO, Distribution Preference Optimization (Qin et al., arXiv 2510.04773). **RECONSTRUCTION** (spec §7).

    The paper's method text and code were not available; this form is derived in spec §7 from the
    abstract and TDPO (arXiv 2404.11999). At each answer position ``t`` with detached logits ``z_t`` and a
    selected token set ``S_t``: ``q+ = softmax(z - alpha 1[S_t])`` (preferred, suppresses confident tokens),
    ``q- = softmax(z + alpha 1[S_t])`` (dispreferred), margin
    ``d_t = sum_a (q+(a) - q-(a)) log(pi_theta(a|s_t) / pi_ref(a|s_t))``
    ``    = [KL(q-||pi_theta) - KL(q+||pi_theta)] - [KL(q-||pi_ref) - KL(q+||pi_ref)]``,
    ``M_i = sum_t m_t d_t`` and ``L = mean_i scale * softplus(-beta M_i)``. ``M = 0``, ``L = log 2`` at
    ``pi_theta = pi_ref``. Every choice the spec could not confirm is a keyword (spec default):
    ``select`` ("topk"; "label" = the answer token; "prob>=tau" needs ``tau``), ``k`` (1), the shift
    ``alpha`` (no default), ``source`` of ``z`` ("ref"; "policy" = detached current logits),
    ``length_norm`` (False: summed positions; True: ``M_i / |y_i|``) and ``scale`` (1).

    ``logits``, ``ref_logits``: ``[N, T, V]`` (tensors or :class:`~alignkit.models.head.HeadLogits`, then
    a chunk of positions at a time) aligned with ``labels`` (token ids) and ``mask`` ``[N, T]``.
    Only masked-in rows are computed (fp32 log_softmax).
    """
    _check_positive("beta", beta)
    _check_positive("alpha", alpha)
    _check_positive("scale", scale)
    if select not in _DIPO_SELECT:
        raise ValueError(f"`select` must be one of {_DIPO_SELECT}, got {select!r}.")
    if select == "topk" and not (isinstance(k, int) and 1 <= k <= logits.shape[-1]):
        raise ValueError(f"`k` must be an int in [1, vocab size {logits.shape[-1]}], got {k!r}.")
    if select == "prob>=tau" and not (tau is not None and 0 < tau <= 1):
        raise ValueError(f"`select='prob>=tau'` needs `tau` in (0, 1], got {tau!r}.")
    if source not in ("ref", "policy"):
        raise ValueError(f"`source` must be 'ref' or 'policy', got {source!r}.")
    _check_same_shape(logits=logits, ref_logits=ref_logits)
    mask = mask.bool()
    terms = partial(_dipo_terms, alpha=alpha, select=select, k=k, tau=tau, source=source)
    d = map_positions(terms, (logits, ref_logits), mask, (labels,))  # [M], M = answer positions
    margin = torch.zeros(mask.shape[0], dtype=d.dtype, device=d.device)
    margin = margin.index_add(0, mask.nonzero(as_tuple=True)[0], d)
    if length_norm:
        margin = margin / mask.sum(-1).clamp_min(1).to(margin.dtype)
    loss = (scale * F.softplus(-beta * margin)).mean()
    return LossOutput(loss, _detached({"forget/dipo": loss, "forget/dipo_margin": margin.mean()}))


def catnip_loss(
    token_logps: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    anchor: Literal["one", "ref"] = "one",
    ref_token_logps: torch.Tensor | None = None,
) -> LossOutput:
    """CATNIP, token-level calibrated NPO (Yang et al., arXiv 2602.02824, later "CALIBURN"). **RECONSTRUCTION** (spec §8).

    The paper's formula was not available; spec §8 proposes token-level NPO against a fixed anchor:
    ``L = (1/N) sum_{i,t} m_it (2/beta) softplus(beta (logp_it - log a_it))``, ``N = sum m``, a token mean over
    the micro-batch. ``anchor="one"`` (spec default): ``a = 1``, reference-free; ``anchor="ref"``:
    ``a = pi_ref(y_t|s_t)`` from ``ref_token_logps`` (token-level NPO). Gradient wrt ``logp_t`` is
    ``(1/N) 2 sigmoid(beta (logp_t - log a_t))``: each token's ascent scales with its own confidence.
    Trainers should register it as ``catnip_reconstructed`` until the paper text is checked.
    """
    _check_positive("beta", beta)
    if anchor not in ("one", "ref"):
        raise ValueError(f"`anchor` must be 'one' or 'ref', got {anchor!r}.")
    if (anchor == "ref") != (ref_token_logps is not None):
        raise ValueError(
            "`ref_token_logps` must be given exactly when `anchor='ref'`; "
            f"got anchor={anchor!r} and ref_token_logps={'set' if ref_token_logps is not None else 'None'}."
        )
    logratio = _fill_masked(token_logps, mask)
    if ref_token_logps is not None:
        _check_same_shape(token_logps=token_logps, ref_token_logps=ref_token_logps)
        logratio = logratio - _fill_masked(ref_token_logps, mask).detach()
    loss = token_mean(2.0 / beta * F.softplus(beta * logratio), mask)
    weight = token_mean(2.0 * torch.sigmoid(beta * logratio), mask)
    return LossOutput(loss, _detached({"forget/catnip": loss, "forget/catnip_weight": weight}))


def ga_per_example(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example gradient ascent ``l_i = sum_t m_it logp_it / sum_t m_it`` (token mean of each row), ``[B]``.

    The per-example form U2A weights (methods-alignment-2.md §7 c, the official code's GA); its batch mean
    equals :func:`ga_loss` (a token mean over the whole batch) only when rows have equal lengths.
    """
    mask = mask.bool()
    return torch.where(mask, token_logps, 0.0).sum(-1) / mask.sum(-1).clamp_min(1)


def npo_per_example(seq_logps: torch.Tensor, ref_seq_logps: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Per-example NPO ``l_i = (2/beta) softplus(beta (S_i - S_ref,i))``, ``[B]``; :func:`npo_loss` is their mean."""
    _check_positive("beta", beta)
    _check_same_shape(seq_logps=seq_logps, ref_seq_logps=ref_seq_logps)
    return 2.0 / beta * F.softplus(beta * (seq_logps - ref_seq_logps))
