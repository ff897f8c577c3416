"""Ranking on token-mean log-probs: AFT's constraint alignment loss, RRHF, PRO, and AFT's boundary term.

Pure functions of tensors; maths, defaults and test vectors are in
``shared/design/methods-alignment-2.md`` (cited as "spec §n"). Inputs are the dense list view
(:func:`alignkit.data.to_dense`): ``logps`` ``[B, K]`` summed completion log-probs, ``lengths``
``[B, K]`` completion token counts, ``scores`` ``[B, K]`` feedback (higher is better; ties make no
pair), ``valid`` ``[B, K]`` (False on padded slots, which may hold anything, NaN included: they are
replaced before any arithmetic, so they change nothing). No reference model.

The score every method here ranks on is the token mean ``a(y) = lp(y) / |y|`` (RRHF:
``lp / |y|^length_penalty``). Pair terms are ``[B, K, K]`` tensors: ``better[b, i, j]`` is True when
item ``i`` is ranked strictly above item ``j``.

What was read from code and what is a reconstruction (spec §0): RRHF and PRO are confirmed from their
official code; AFT's score, alignment loss, DC and BC constraints come from a transcription of the
paper; AFT's ranking form (``L_RBC``) and the constraint on RRHF, PRO and DPO are RECONSTRUCTIONS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.losses.core import LossOutput, _check_positive, _detached

__all__ = [
    "AFT_CONSTRAINTS",
    "BOUNDARY_GRADS",
    "RANKING_CONSTRAINTS",
    "RRHF_SFT_REDUCTIONS",
    "aft_loss",
    "boundary_exponents",
    "boundary_loss",
    "pair_mask",
    "pro_loss",
    "rrhf_loss",
    "token_mean_scores",
]

AFT_CONSTRAINTS = ("none", "dc", "bc")
RANKING_CONSTRAINTS = AFT_CONSTRAINTS  # the same switch on RRHF, PRO and DPO (spec §5)
BOUNDARY_GRADS = ("none", "full")
RRHF_SFT_REDUCTIONS = ("token_mean", "upstream")
_NEG_INF = float("-inf")


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")


def _mean_over(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.where(keep, values, 0.0).sum() / keep.sum().clamp_min(1)


def token_mean_scores(
    logps: torch.Tensor, lengths: torch.Tensor, valid: torch.Tensor, length_penalty: float = 1.0
) -> torch.Tensor:
    """``lp / |y|^length_penalty`` per item (spec §1), 0 on padded slots; lengths clamp to >= 1."""
    valid = valid.bool()
    lp = torch.where(valid, logps, 0.0)
    n = torch.where(valid, lengths.to(lp.dtype), 1.0).clamp_min(1.0)
    return lp / n**length_penalty


def pair_mask(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``better[..., i, j]``: both valid and ``scores_i > scores_j`` strictly (ties make no pair)."""
    valid = valid.bool()
    r = torch.where(valid, scores, 0.0)
    return valid[..., :, None] & valid[..., None, :] & (r[..., :, None] > r[..., None, :])


def boundary_exponents(
    u: torch.Tensor, better: torch.Tensor, margin: float, *, full_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """AFT's boundary exponents ``T_ij - u_j`` over the pairs ``i > j`` (``-inf`` elsewhere) and ``B_j``.

    ``B_j = min_{i > j} u_i - margin`` (the weakest item ranked above j, less the margin) and
    ``T_ij = 2 B_j - u_i``: for one pair, ``exp(u_j - u_i) + exp(T_ij - u_j)`` is smallest at
    ``u_j = B_j`` (spec §2(b)). ``B`` and ``T`` are constants (``sg``) unless ``full_grad`` (AFT's
    ``boundary_grad="full"``, which also pushes the weakest upper item down; spec §2(f)).
    ``B_j`` is 0 where nothing ranks above j.
    """
    upper = u if full_grad else u.detach()
    has_upper = better.any(-2)  # [..., K]: j has some i above it
    lowest_upper = torch.where(better, upper[..., :, None], float("inf")).amin(-2)
    bound = torch.where(has_upper, lowest_upper, 0.0) - margin
    exps = 2 * bound[..., None, :] - upper[..., :, None] - u[..., None, :]
    return torch.where(better, exps, _NEG_INF), torch.where(has_upper, bound, 0.0)


def _log1p_sum_exp(exps: torch.Tensor, has_term: torch.Tensor) -> torch.Tensor:
    """``log(1 + sum exp(exps))`` over the last dims flattened, per list; 0 for a list with no term.

    Computed as ``softplus(logsumexp(.))``; an empty list gets finite placeholder exponents first
    (the logsumexp of all ``-inf`` has a NaN gradient, which ``where`` would not stop).
    """
    flat = exps.flatten(1)
    flat = torch.where(has_term[:, None], flat, 0.0)
    return torch.where(has_term, F.softplus(torch.logsumexp(flat, -1)), 0.0)


def boundary_loss(
    u: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, *, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The constraint's add-on term (spec §5, RECONSTRUCTION), per list ``[B]``, and which lists have a pair.

    ``L_bound = log(1 + sum_{i > j} exp(T_ij - u_j))`` with ``B``, ``T`` constants: it only pushes
    lower-ranked items up, towards ``margin`` below the weakest item above them, on the method's own
    score ``u`` (RRHF, PRO: token-mean log-prob; DPO: ``beta * log-ratio``).
    """
    _check_positive("margin", margin)
    better = pair_mask(scores, valid)
    has_pair = better.flatten(1).any(-1)
    exps, _ = boundary_exponents(torch.where(valid.bool(), u, 0.0), better, margin)
    return _log1p_sum_exp(exps, has_pair), has_pair


def _mean_with_bound(
    per_list, u, scores, valid, constraint: str, margin: float, metrics: dict
) -> torch.Tensor:
    """Mean over the lists of ``per_list``, plus (``constraint="bc"``) the boundary term on the score ``u``."""
    lists = valid.bool().any(-1)
    if constraint == "bc":
        bound, _ = boundary_loss(u, scores, valid, margin=margin)
        per_list = per_list + bound
        metrics["constraint/bound"] = _mean_over(bound, lists)
    return _mean_over(per_list, lists)


# ---------------------------------------------------------------------------------------- AFT


def aft_loss(
    logps: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    *,
    gold_token_logps: torch.Tensor | None = None,
    gold_mask: torch.Tensor | None = None,
    feedback: str = "binary",
    constraint: str = "bc",
    boundary_margin: float = 0.5,
    boundary_grad: str = "none",
) -> LossOutput:
    """AFT's constraint alignment loss (Wang et al., "Making Large Language Models Better Reasoners
    with Alignment", arXiv 2309.02144), plus the VFT NLL of the gold chain when it is given.

    Scores ``s = lp / |y|`` (token mean). Over every pair ``p > n`` of a question (binary feedback:
    ``labels`` 1 = correct final answer, 0 = wrong; ranked: any scores, higher better):

    * ``constraint="none"``: ``L_A = log(1 + sum exp(s_n - s_p))`` (Eq. 6);
    * ``"dc"``: the same with ``sg(s_n)`` (Eq. 7): equal value, only the upper items get gradient;
    * ``"bc"``: ``log(1 + sum [exp(s_n - s_p) + exp(T_pn - s_n)])`` (Eq. 8), ``T`` from
      :func:`boundary_exponents` (``boundary_margin`` is the paper's beta, in nats per token): a lower
      item is pushed down only until it sits ``boundary_margin`` below the weakest item above it.

    ``feedback="ranked"`` (``L_RBC``, RECONSTRUCTION, spec §2(b)) uses the same pair sums over every
    strictly ordered pair, ``B_j`` from the weakest item ranked above j; with two levels it equals the
    binary loss exactly, so ``"binary"`` only adds the check that labels are 0/1.
    ``boundary_grad="full"`` differentiates ``B`` and ``T`` (not stated in the transcription; kept for
    parity experiments, spec §2(f)).

    Reduction (spec §2(c), ours where the paper is silent): one loss per question, mean over the
    questions that have a pair; questions whose samples are all right or all wrong add nothing here
    (counted in ``aft/all_correct``, ``aft/all_wrong``, ``aft/no_pair``). With ``gold_token_logps``
    ``[B, T]`` and ``gold_mask``, the objective is ``L_VFT + L_A*`` (Eq. 9, weight 1), ``L_VFT`` the
    token-mean NLL of the gold chains over the batch.
    """
    _check_choice("feedback", feedback, ("binary", "ranked"))
    _check_choice("constraint", constraint, AFT_CONSTRAINTS)
    _check_choice("boundary_grad", boundary_grad, BOUNDARY_GRADS)
    _check_positive("boundary_margin", boundary_margin)
    valid = valid.bool()
    labels = torch.where(valid, labels, 0.0).to(logps.dtype)
    if feedback == "binary" and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("aft_loss(feedback='binary'): `labels` must be 0 or 1; use feedback='ranked'.")
    s = token_mean_scores(logps, lengths, valid)
    better = pair_mask(labels, valid)
    has_pair = better.flatten(1).any(-1)

    lower = s.detach() if constraint == "dc" else s
    pair_exps = torch.where(better, lower[..., None, :] - s[..., :, None], _NEG_INF)  # s_j - s_i
    exps = [pair_exps]
    bound = None
    if constraint == "bc":
        boundary, bound = boundary_exponents(s, better, boundary_margin, full_grad=boundary_grad == "full")
        exps.append(boundary)
    per_question = _log1p_sum_exp(torch.cat(exps, -1), has_pair)
    alignment = _mean_over(per_question, has_pair)
    loss = alignment
    metrics = {"aft/alignment": alignment}
    if gold_token_logps is not None:
        if gold_mask is None:
            raise ValueError("aft_loss: `gold_mask` is needed with `gold_token_logps`.")
        mask = gold_mask.bool()
        vft = -torch.where(mask, gold_token_logps, 0.0).sum() / mask.sum().clamp_min(1)
        loss = vft + alignment
        metrics["aft/vft"] = vft

    with torch.no_grad():
        ordered = better & (s[..., :, None] > s[..., None, :])
        lower_items = better.any(-2)
        upper_items = better.any(-1)
        n_valid = valid.sum(-1)
        n_pos = (valid & (labels >= 1)).sum(-1)
        metrics.update(
            {
                "aft/pairs": better.sum().to(s.dtype),
                "aft/assessment_accuracy": ordered.sum().to(s.dtype) / better.sum().clamp_min(1),
                "aft/questions_with_pairs": has_pair.sum().to(s.dtype),
                "aft/no_pair": (~has_pair & (n_valid > 0)).sum().to(s.dtype),
                "aft/len_upper": _mean_over(torch.where(valid, lengths.to(s.dtype), 0.0), upper_items),
                "aft/len_lower": _mean_over(torch.where(valid, lengths.to(s.dtype), 0.0), lower_items),
            }
        )
        if feedback == "binary":
            metrics["aft/all_correct"] = ((n_pos == n_valid) & (n_valid > 0)).sum().to(s.dtype)
            metrics["aft/all_wrong"] = ((n_pos == 0) & (n_valid > 0)).sum().to(s.dtype)
        if bound is not None:
            metrics["aft/below_boundary"] = _mean_over((s < bound).to(s.dtype), lower_items)
    return LossOutput(loss, _detached(metrics))


# ---------------------------------------------------------------------------------------- RRHF


def rrhf_loss(
    logps: torch.Tensor,
    lengths: torch.Tensor,
    scores: torch.Tensor,
    valid: torch.Tensor,
    *,
    best_token_logps: torch.Tensor,
    best_mask: torch.Tensor,
    rank_weight: float = 1.0,
    length_penalty: float = 1.0,
    sft_reduction: str = "token_mean",
    padded_lengths: torch.Tensor | None = None,
    constraint: str = "none",
    boundary_margin: float = 0.5,
) -> LossOutput:
    """RRHF (Yuan et al., arXiv 2304.05302; confirmed from the official ``train.py``, spec §3).

    ``p_i = lp_i / |y_i|^length_penalty``; ``L_rank = sum_{r_i < r_j} max(0, p_i - p_j)`` over every
    ordered pair of a prompt (summed, not averaged); ``L_ft`` = NLL of the top-scored response (first on
    ties), whose token log-probs ``best_token_logps`` ``[B, T]`` and ``best_mask`` the caller selects;
    ``L = rank_weight * L_rank + L_ft``, mean over prompts.

    ``sft_reduction="token_mean"`` (default): ``L_ft = -sum / |y_best|``; ``"upstream"``: divided by
    ``padded_lengths`` ``[B]`` (upstream divides by the padded row length of its one-prompt batch,
    prompt and padding counting as zeros). ``constraint`` (RECONSTRUCTION, spec §5): ``"dc"`` puts
    ``sg`` on the worse item ``p_i`` of each pair; ``"bc"`` adds :func:`boundary_loss` on ``p`` with
    ``boundary_margin`` (per-token nats), weight 1, outside the hinge sum.
    """
    _check_choice("sft_reduction", sft_reduction, RRHF_SFT_REDUCTIONS)
    _check_choice("constraint", constraint, RANKING_CONSTRAINTS)
    if rank_weight < 0:
        raise ValueError(f"`rank_weight` must be >= 0, got {rank_weight!r}.")
    valid = valid.bool()
    p = token_mean_scores(logps, lengths, valid, length_penalty)
    better = pair_mask(scores, valid)  # [b, j, i]: j above i
    worse = p.detach() if constraint == "dc" else p
    hinge = F.relu(worse[..., None, :] - p[..., :, None])  # max(0, p_i - p_j) at [j, i]
    rank = torch.where(better, hinge, 0.0).flatten(1).sum(-1)  # [B]

    best_mask = best_mask.bool()
    nll_sum = -torch.where(best_mask, best_token_logps, 0.0).sum(-1)
    if sft_reduction == "token_mean":
        sft = nll_sum / best_mask.sum(-1).clamp_min(1)
    else:
        if padded_lengths is None:
            raise ValueError("rrhf_loss(sft_reduction='upstream') needs `padded_lengths`.")
        sft = nll_sum / padded_lengths.to(nll_sum.dtype)
    lists = valid.any(-1)
    metrics = {}
    loss = _mean_with_bound(rank_weight * rank + sft, p, scores, valid, constraint, boundary_margin, metrics)
    with torch.no_grad():
        violated = better & (p[..., None, :] > p[..., :, None])
        metrics.update(
            {
                "rrhf/rank": _mean_over(rank, lists),
                "rrhf/sft": _mean_over(sft, lists),
                "rrhf/violated_pairs": violated.sum().to(p.dtype) / better.sum().clamp_min(1),
                "rrhf/pairs": better.sum().to(p.dtype),
            }
        )
    return LossOutput(loss, _detached(metrics))


# ---------------------------------------------------------------------------------------- PRO


def pro_loss(
    logps: torch.Tensor,
    lengths: torch.Tensor,
    scores: torch.Tensor,
    valid: torch.Tensor,
    *,
    sft_weight: float = 0.05,
    constraint: str = "none",
    boundary_margin: float = 0.5,
) -> LossOutput:
    """PRO, Preference Ranking Optimization (Song et al., arXiv 2306.17492; confirmed from the official
    ``process_manager.py::compute_loss``, spec §4).

    Sorts each list by ``scores`` (raw rewards, descending, stable on ties) and, for each stage
    ``k = 1..n-1``, with ``t_ki = r_k - r_i`` (i > k) and ``t_kk = max_i t_ki``:
    ``L_k = logsumexp([s_k t_kk, s_i t_ki]) - s_k t_kk`` on token-mean scores ``s``. Plus
    ``sft_weight * (n-1)^2 * (-lp(y_1))`` on the **summed** log-prob of the best response.
    Per list: stages summed plus the SFT term; mean over lists (upstream: each stage and the SFT term
    averaged over its fixed-size batch, the same number when every list has n items).
    Upstream's ``log(1e-10 + sum exp)`` is computed as a logsumexp (agrees to 1e-10 on the spec vector).

    ``constraint`` (RECONSTRUCTION, spec §5): ``"dc"`` detaches the competitors ``s_i`` (i > k);
    ``"bc"`` adds :func:`boundary_loss` on ``s`` with ``boundary_margin`` (per-token
    nats), weight 1.
    """
    _check_choice("constraint", constraint, RANKING_CONSTRAINTS)
    if sft_weight < 0:
        raise ValueError(f"`sft_weight` must be >= 0, got {sft_weight!r}.")
    valid = valid.bool()
    s_all = token_mean_scores(logps, lengths, valid)
    key = torch.where(valid, -scores.to(s_all.dtype), float("inf"))
    order = torch.sort(key, dim=-1, stable=True).indices
    s = s_all.gather(-1, order)
    r = torch.where(valid, scores.to(s_all.dtype), 0.0).gather(-1, order)
    ok = valid.gather(-1, order)
    lp_sorted = torch.where(valid, logps, 0.0).gather(-1, order)
    k = s.shape[-1]
    later = torch.ones(k, k, dtype=torch.bool, device=s.device).triu(1)  # [k, i]: i after k
    competes = later & ok[..., :, None] & ok[..., None, :]  # [B, k, i]
    t = torch.where(competes, r[..., :, None] - r[..., None, :], 0.0)
    stage = competes.any(-1)  # [B, k]
    t_kk = torch.where(competes, t, _NEG_INF).amax(-1)
    t_kk = torch.where(stage, t_kk, 0.0)
    lower = s.detach() if constraint == "dc" else s
    top = s * t_kk  # [B, k]
    rivals = torch.where(competes, lower[..., None, :] * t, _NEG_INF)
    z = torch.cat([top[..., None], rivals], -1)
    z = torch.where(stage[..., None], z, 0.0)
    stages = torch.where(stage, torch.logsumexp(z, -1) - top, 0.0)  # [B, k]
    n = ok.sum(-1).to(s.dtype)
    lists = ok.any(-1)
    sft = sft_weight * (n - 1).clamp_min(0) ** 2 * (-lp_sorted[..., 0])
    metrics = {}
    loss = _mean_with_bound(stages.sum(-1) + sft, s_all, scores, valid, constraint, boundary_margin, metrics)
    with torch.no_grad():
        metrics["pro/sft"] = _mean_over(sft, lists)
        metrics["pro/ranking"] = _mean_over(stages.sum(-1), lists)
        for j in range(k - 1):
            metrics[f"pro/stage{j + 1}"] = _mean_over(stages[..., j], stage[..., j])
    return LossOutput(loss, _detached(metrics))
