"""Preference-alignment losses: S-DPO (DPO at N=1, DPOP option) and LiPO's ranking objectives.

Pure functions of tensors; maths, defaults and test vectors are in
``shared/design/methods-alignment.md`` (cited as "spec §n"). Every loss reads the dense list view
the trainers build with :func:`alignkit.data.to_dense`:

* ``logps``, ``ref_logps``: ``[B, K]`` summed completion log-probs under the policy / reference;
* ``valid``: ``[B, K]`` bool, False on padded slots (K differs per prompt). Padded slots may hold
  anything, NaN included: they are replaced before any arithmetic, so they change nothing;
* the score of completion k is ``s_k = beta * (logps_k - ref_logps_k)`` (the DPO implicit reward).

No Python loop over pairs: pair terms are ``[B, K, K]`` tensors with a pair mask.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from alignkit.losses.core import LossOutput, _check_positive, _detached
from alignkit.losses.ranking import RANKING_CONSTRAINTS, boundary_exponents

__all__ = [
    "LIPO_LOSS_TYPES",
    "labels_from_ranks",
    "labels_from_scores",
    "lambda_weights",
    "lipo_loss",
    "score_ranks",
    "softmax_dpo_loss",
]

LIPO_LOSS_TYPES = (
    "lambda",
    "pair_logistic",
    "pair_hinge",
    "list_mle",
    "softmax",
    "point_mse",
    "point_sigmoid",
)
_NEG_INF = float("-inf")


def _scores(logps, ref_logps, valid, beta):
    """``beta * (logps - ref_logps)`` with padded slots set to 0 before anything else touches them."""
    return beta * torch.where(valid, logps - ref_logps, 0.0)


def _mean_over(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``keep``; 0 (with a zero gradient) when nothing is kept."""
    return torch.where(keep, values, 0.0).sum() / keep.sum().clamp_min(1)


# ---------------------------------------------------------------------------------------- S-DPO


def softmax_dpo_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    valid: torch.Tensor,
    *,
    beta: float,
    dpop_lambda: float = 0.0,
    constraint: str = "none",
    boundary_margin: float = 0.1,
    boundary_form: str = "separate",
) -> LossOutput:
    """S-DPO (Chen et al., arXiv 2406.09215): column 0 is the chosen completion, 1.. the negatives.

    ``L = softplus(logsumexp_j beta*(r_j - r_c)) = -log softmax([beta*r_c, beta*r_1..beta*r_N])[0]``
    (spec §2b), in the logsumexp form, which stays finite where the official
    ``-logsigmoid(-log(sum(exp(.))))`` overflows (spec T2.4). ``r = logps - ref_logps``. Padded
    negatives are ``-inf`` inside the logsumexp; a prompt without a valid negative adds nothing and
    leaves the mean over prompts. With one negative this is DPO-sigmoid exactly (TRL ``sigmoid``).

    ``dpop_lambda`` > 0 adds DPOP's penalty (Pal et al., arXiv 2402.13228; spec §5.2) inside the
    sigmoid: the chosen score becomes ``beta*(r_c - lambda*max(0, ref_logps_c - logps_c))``, so the
    loss equals (S-)DPO while the chosen log-prob stays above the reference.

    ``constraint`` (AFT's constraint on DPO, arXiv 2309.02144; the form is a RECONSTRUCTION,
    ``methods-alignment-2.md`` §5), on the implicit rewards ``u = beta*r``: ``"dc"`` detaches the
    negatives' rewards (only the chosen one gets gradient); ``"bc"`` adds the boundary term
    ``log(1 + sum_j exp(T - u_j))``, ``T = 2*B - sg(u_c)``, ``B = sg(u_c) - boundary_margin`` (in
    implicit-reward units): it pushes a negative back up once it falls ``boundary_margin`` below the
    chosen one. ``boundary_form="one_log"`` puts those terms inside the loss's own log instead
    (``log(1 + e^{-m} + e^{m - 2 margin})`` for one negative, ``m = u_c - u_l``; spec §5's alternative).

    Metrics use the upstream names: ``rewards/chosen``, ``rewards/rejected{j}``,
    ``rewards/margins-rejected{j}`` (j = 1..N_max, averaged over the prompts that have a j-th
    negative), ``rewards/accuracies`` (chosen strictly above every negative), plus TRL's pooled
    ``rewards/rejected`` and ``rewards/margins``.
    """
    _check_positive("beta", beta)
    if dpop_lambda < 0:
        raise ValueError(f"`dpop_lambda` must be >= 0, got {dpop_lambda!r}.")
    if constraint not in RANKING_CONSTRAINTS:
        raise ValueError(f"`constraint` must be one of {RANKING_CONSTRAINTS}, got {constraint!r}.")
    if boundary_form not in ("separate", "one_log"):
        raise ValueError(f"`boundary_form` must be 'separate' or 'one_log', got {boundary_form!r}.")
    _check_positive("boundary_margin", boundary_margin)
    valid = valid.bool()
    rewards = _scores(logps, ref_logps, valid, beta)  # [B, K]
    chosen = rewards[:, 0]
    if dpop_lambda:
        below_ref = torch.where(valid[:, 0], ref_logps[:, 0] - logps[:, 0], 0.0).clamp_min(0.0)
        chosen = chosen - beta * dpop_lambda * below_ref
    negatives = valid[:, 1:]
    has_negative = valid[:, 0] & negatives.any(-1)
    rejected = rewards[:, 1:].detach() if constraint == "dc" else rewards[:, 1:]
    gaps = torch.where(negatives, rejected - chosen[:, None], _NEG_INF)  # [B, N]
    bound_terms = None
    if constraint == "bc":
        better = torch.zeros(valid.shape + valid.shape[-1:], dtype=torch.bool, device=valid.device)
        better[:, 0, 1:] = negatives & has_negative[:, None]
        bound_terms = boundary_exponents(rewards, better, boundary_margin)[0][:, 0, 1:]  # [B, N]
        if boundary_form == "one_log":
            gaps = torch.cat([gaps, bound_terms], -1)
    z = torch.logsumexp(torch.where(has_negative[:, None], gaps, 0.0), -1)
    per_prompt = torch.where(has_negative, F.softplus(z), 0.0)
    extra = {}
    if bound_terms is not None and boundary_form == "separate":
        bound_z = torch.logsumexp(torch.where(has_negative[:, None], bound_terms, 0.0), -1)
        bound = torch.where(has_negative, F.softplus(bound_z), 0.0)
        per_prompt = per_prompt + bound
        extra["constraint/bound"] = _mean_over(bound, has_negative)
    loss = _mean_over(per_prompt, has_negative)

    with torch.no_grad():
        plain_chosen = rewards[:, 0]
        beaten = torch.where(negatives, rewards[:, 1:] < plain_chosen[:, None], True).all(-1)
        metrics = {
            "rewards/chosen": _mean_over(plain_chosen, has_negative),
            "rewards/rejected": _mean_over(rewards[:, 1:], negatives & has_negative[:, None]),
            "rewards/margins": _mean_over(
                plain_chosen[:, None] - rewards[:, 1:], negatives & has_negative[:, None]
            ),
            "rewards/accuracies": _mean_over(beaten.to(rewards.dtype), has_negative),
        }
        for j in range(negatives.shape[1]):
            keep = negatives[:, j] & has_negative
            metrics[f"rewards/rejected{j + 1}"] = _mean_over(rewards[:, j + 1], keep)
            metrics[f"rewards/margins-rejected{j + 1}"] = _mean_over(plain_chosen - rewards[:, j + 1], keep)
        if dpop_lambda:
            metrics["dpop/penalty"] = _mean_over(below_ref, has_negative)
        metrics.update(extra)
    return LossOutput(loss, _detached(metrics))


# ---------------------------------------------------------------------------------------- LiPO labels


def labels_from_ranks(ranks: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """LiPO labels from ranks (1 = best; spec §3a): ``psi_i = (1/K) sum_j Psi[i, j]``.

    ``Psi[i, j] = 1`` if ``y_i`` is ranked above ``y_j``, 0 below, and 0.5 for a tie (our extension;
    ``Psi[i, i] = 0.5`` as in the paper). K counts the valid items of the list. ``ranks`` ``[B, K]``
    (or ``[K]``) -> labels in [0, 1] of the same shape, 0 on padded slots.
    ``[1, 2, 3] -> [0.8333, 0.5, 0.1667]``; ``[1, 2, 2, 4] -> [0.875, 0.5, 0.5, 0.125]``.
    """
    ranks = torch.as_tensor(ranks, dtype=torch.float64 if not torch.is_tensor(ranks) else None)
    win = (ranks[..., :, None] < ranks[..., None, :]).to(ranks.dtype)
    win = win + 0.5 * (ranks[..., :, None] == ranks[..., None, :]).to(ranks.dtype)
    return _average_wins(win, valid)


def labels_from_scores(
    scores: torch.Tensor, valid: torch.Tensor | None = None, *, temperature: float = 1.0
) -> torch.Tensor:
    """Raw reward scores -> LiPO labels in [0, 1]: the paper's averaging over a win-probability matrix.

    ``Psi[i, j] = sigmoid((R_i - R_j) / temperature)`` (a Bradley-Terry win probability;
    ``Psi[i, i] = 0.5``), ``psi_i = (1/K) sum_j Psi[i, j]`` over the valid items (spec §3a, "our
    suggestion"). The order of the scores is kept and the result does not depend on a shift of all
    scores; ``temperature`` sets how far apart scores must be to count as a clear win.
    """
    _check_positive("temperature", temperature)
    scores = torch.as_tensor(scores, dtype=torch.float64 if not torch.is_tensor(scores) else None)
    win = torch.sigmoid((scores[..., :, None] - scores[..., None, :]) / temperature)
    return _average_wins(win, valid)


def _average_wins(win: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return win.mean(-1)
    valid = valid.bool()
    both = valid[..., :, None] & valid[..., None, :]
    labels = torch.where(both, win, 0.0).sum(-1) / valid.sum(-1, keepdim=True).clamp_min(1)
    return torch.where(valid, labels, 0.0)


# ---------------------------------------------------------------------------------------- LiPO loss


@torch.no_grad()
def score_ranks(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1-based position of each item when its list is sorted by ``scores`` descending (valid items only).

    Ties keep the order of appearance (Rax's default without a PRNG key): ``rank_i = 1 +
    #{j: s_j > s_i} + #{j < i: s_j = s_i}``. Padded slots get rank 0.
    """
    valid = valid.bool()
    k = scores.shape[-1]
    s_i, s_j = scores[..., :, None], scores[..., None, :]
    earlier = torch.ones(k, k, dtype=torch.bool, device=scores.device).tril(-1)  # [i, j]: j < i
    ahead = ((s_j > s_i) | ((s_j == s_i) & earlier)) & valid[..., None, :]
    return torch.where(valid, 1 + ahead.sum(-1), 0)


@torch.no_grad()
def lambda_weights(
    scores: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    *,
    gain: Literal["exp2", "constant"] = "exp2",
    discount: Literal["log2", "ln", "constant"] = "log2",
) -> torch.Tensor:
    """LiPO-λ pair weights ``Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|`` (spec §3b), ``[B, K, K]``.

    ``G = 2^psi - 1`` (``gain="constant"``: ``|G_i - G_j| := 1``); ``D(tau) = log2(1 + tau)`` (Rax),
    ``ln(1 + tau)`` (Eq. 8 read with a natural log) or ``discount="constant"``
    (``|1/D_i - 1/D_j| := 1``); ``tau`` ranks the current scores (policy and reference), not the labels.
    Computed without gradient: the weights steer the pairwise loss, they are not optimised.
    """
    if gain not in ("exp2", "constant"):
        raise ValueError(f"`gain` must be 'exp2' or 'constant', got {gain!r}.")
    if discount not in ("log2", "ln", "constant"):
        raise ValueError(f"`discount` must be 'log2', 'ln' or 'constant', got {discount!r}.")
    if gain == "constant":
        gain_gap = torch.ones_like(scores)[..., None].expand(*scores.shape, scores.shape[-1])
    else:
        g = torch.exp2(labels) - 1
        gain_gap = (g[..., :, None] - g[..., None, :]).abs()
    if discount == "constant":
        return gain_gap.clone()
    tau = score_ranks(scores, valid).to(scores.dtype)
    log = torch.log2 if discount == "log2" else torch.log
    inv = torch.where(valid, 1.0 / log(1 + tau.clamp_min(1)), 0.0)
    return gain_gap * (inv[..., :, None] - inv[..., None, :]).abs()


def lipo_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    *,
    beta: float,
    loss_type: str = "lambda",
    reduction: Literal["rax", "sum"] = "rax",
    gain: Literal["exp2", "constant"] = "exp2",
    discount: Literal["log2", "ln", "constant"] = "log2",
    softmax_labels: Literal["normalized", "raw"] = "normalized",
    list_mle_ties: Literal["index", "random"] = "index",
) -> LossOutput:
    """LiPO (Liu et al., arXiv 2402.01878): a learning-to-rank loss on ``s = beta*(logps - ref_logps)``.

    ``labels`` ``[B, K]`` are graded labels psi in [0, 1], higher is better (see
    :func:`labels_from_ranks`, :func:`labels_from_scores`). Pairs are ``(i, j)`` with
    ``psi_i > psi_j`` strictly (label ties make no pair). Per list (spec §3b):

    * ``lambda`` (LiPO-λ, Eq. 8): ``sum Delta_ij * softplus(-(s_i - s_j))``, ``Delta`` from
      :func:`lambda_weights` (no gradient);
    * ``pair_logistic`` (DPO_BT): ``sum softplus(-(s_i - s_j))``; K=2 is DPO;
    * ``pair_hinge`` (SLiC_norm): ``sum max(0, 1 - (s_i - s_j))``;
    * ``list_mle`` (DPO_PL): ``-sum_k [s_tau(k) - logsumexp_{j>=k} s_tau(j)]``, tau sorting the labels
      descending; label ties by index (Rax without a PRNG key) or, with ``list_mle_ties="random"``,
      in a fresh random order per call (torch's global RNG, so a seeded run repeats);
    * ``softmax`` (ListNet): ``-sum_k w_k log_softmax(s)_k``, ``w = psi / sum psi`` (Eq. 11,
      ``softmax_labels="normalized"``) or ``w = psi`` (Rax's default, ``"raw"``); one-hot labels give S-DPO;
    * ``point_mse``: ``sum_k (psi_k - s_k)^2``; ``point_sigmoid``: ``sum_k BCE(sigmoid(s_k), psi_k)``.

    ``reduction="rax"`` (default; the paper computed every loss with Rax, App. B): pairwise and lambda
    losses are the mean over every valid pair of the batch with lambda weights multiplied by the list
    size K (here the number of valid items, so padding changes nothing); pointwise losses are the
    mean over all valid items. ``reduction="sum"``: Eq. 5-11 as printed, per-list sums, mean over lists.
    list_mle and softmax are per-list sums averaged over lists under both. Lists without a valid
    pair add nothing to pairwise/lambda losses and leave their mean (``lipo/lists_without_pairs``
    counts them); a batch without any pair gives 0.
    """
    _check_positive("beta", beta)
    if loss_type not in LIPO_LOSS_TYPES:
        raise ValueError(f"`loss_type` must be one of {LIPO_LOSS_TYPES}, got {loss_type!r}.")
    if reduction not in ("rax", "sum"):
        raise ValueError(f"`reduction` must be 'rax' or 'sum', got {reduction!r}.")
    if softmax_labels not in ("normalized", "raw"):
        raise ValueError(f"`softmax_labels` must be 'normalized' or 'raw', got {softmax_labels!r}.")
    if list_mle_ties not in ("index", "random"):
        raise ValueError(f"`list_mle_ties` must be 'index' or 'random', got {list_mle_ties!r}.")
    valid = valid.bool()
    s = _scores(logps, ref_logps, valid, beta)
    psi = torch.where(valid, labels, 0.0).to(s.dtype)
    pairs = valid[..., :, None] & valid[..., None, :] & (psi[..., :, None] > psi[..., None, :])  # [B, K, K]
    list_has_pair = pairs.flatten(1).any(-1)
    lists = valid.any(-1)

    if loss_type in ("lambda", "pair_logistic", "pair_hinge"):
        diff = s[..., :, None] - s[..., None, :]
        if loss_type == "pair_hinge":
            per_pair = F.relu(1 - diff)
        else:
            per_pair = F.softplus(-diff)
        if loss_type == "lambda":
            weight = lambda_weights(s, psi, valid, gain=gain, discount=discount)
            if reduction == "rax":
                weight = weight * valid.sum(-1).to(s.dtype)[:, None, None]
            per_pair = weight * per_pair
        per_pair = torch.where(pairs, per_pair, 0.0)
        if reduction == "rax":
            loss = per_pair.sum() / pairs.sum().clamp_min(1)
        else:
            loss = _mean_over(per_pair.flatten(1).sum(-1), list_has_pair)
    elif loss_type == "list_mle":
        key = torch.where(valid, -psi, math.inf)
        if list_mle_ties == "random":
            # Shuffle first, then a stable sort by label: tied labels keep the shuffled order.
            shuffle = torch.rand(key.shape, device=key.device).argsort(-1)
            order = shuffle.gather(-1, torch.sort(key.gather(-1, shuffle), dim=-1, stable=True).indices)
        else:
            order = torch.sort(key, dim=-1, stable=True).indices
        s_sorted = torch.gather(torch.where(valid, s, _NEG_INF), -1, order)
        valid_sorted = torch.gather(valid, -1, order)
        # logsumexp over positions j >= k: a reversed cumulative logsumexp.
        tail = torch.logcumsumexp(s_sorted.flip(-1), -1).flip(-1)
        terms = torch.where(valid_sorted, tail - torch.where(valid_sorted, s_sorted, 0.0), 0.0)
        loss = _mean_over(terms.sum(-1), lists)
    elif loss_type == "softmax":
        weight = psi / psi.sum(-1, keepdim=True).clamp_min(1e-12) if softmax_labels == "normalized" else psi
        log_p = torch.log_softmax(torch.where(valid, s, _NEG_INF), -1)
        terms = torch.where(valid, -weight * torch.where(valid, log_p, 0.0), 0.0)
        loss = _mean_over(terms.sum(-1), lists)
    else:
        if loss_type == "point_mse":
            per_item = (psi - s) ** 2
        else:
            per_item = -(psi * F.logsigmoid(s) + (1 - psi) * F.logsigmoid(-s))
        per_item = torch.where(valid, per_item, 0.0)
        if reduction == "rax":
            loss = per_item.sum() / valid.sum().clamp_min(1)
        else:
            loss = _mean_over(per_item.sum(-1), lists)

    with torch.no_grad():
        correct = pairs & (s[..., :, None] > s[..., None, :])
        metrics = {
            f"lipo/{loss_type}": loss,
            "rewards/mean": _mean_over(s, valid),
            "rewards/pair_accuracy": correct.sum() / pairs.sum().clamp_min(1),
            "lipo/pairs": pairs.sum().to(s.dtype),
            "lipo/lists_without_pairs": (lists & ~list_has_pair).sum().to(s.dtype),
        }
    return LossOutput(loss, _detached(metrics))
