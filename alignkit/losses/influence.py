"""U2A, Unlearning to Align (arXiv 2504.06659; methods-alignment-2.md §7): the weight maths, pure.

With the inner Hessian approximated by ``gamma * I`` (the official code: gamma = 1), the influence of
unlearning example ``i`` on the preference loss ``J`` is ``I_i = <g_J, g_i> / gamma``: a descent step of
size eta on ``l_i`` changes J by about ``-eta * I_i``, so ``I_i > 0`` means unlearning ``i`` helps
alignment. Selection keeps the top k by ``I``; the weights take exponentiated-gradient steps on the kept
set and are rescaled to mean 1 there. The sign of that step is a documented disagreement inside the
official code (§7 f): ``sign=+1`` follows the derivation (up-weight what lowers J, the default),
``sign=-1`` is the upstream step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.losses.core import _check_positive

__all__ = ["WEIGHT_UPDATES", "eg_update", "influence_scores", "preference_loss", "select_top_k"]

# weight_update name -> sign of the exponentiated-gradient step
WEIGHT_UPDATES = {"derivation": 1.0, "official": -1.0}


def influence_scores(g_val: torch.Tensor, g_examples: torch.Tensor, *, gamma: float = 1.0) -> torch.Tensor:
    """``I_i = <g_J, g_i> / gamma`` for flat gradients ``g_val`` ``[P]`` and ``g_examples`` ``[M, P]`` -> ``[M]``."""
    _check_positive("gamma", gamma)
    if g_val.dim() != 1 or g_examples.dim() != 2 or g_examples.shape[1] != g_val.shape[0]:
        raise ValueError(
            f"`g_val` must be [P] and `g_examples` [M, P], got {tuple(g_val.shape)} and {tuple(g_examples.shape)}."
        )
    return g_examples @ g_val / gamma


def select_top_k(scores: torch.Tensor, k: int | None, *, positive_only: bool = False) -> torch.Tensor:
    """Indices of the ``k`` largest scores (all when ``k`` is None), largest first; ties keep index order.

    ``positive_only`` drops examples whose unlearning would raise J (``I <= 0``) first.
    """
    if k is not None and k < 1:
        raise ValueError(f"`k` must be >= 1 or None, got {k}.")
    order = torch.argsort(scores, descending=True, stable=True)
    if positive_only:
        order = order[scores[order] > 0]
    return order if k is None else order[:k]


def eg_update(weights: torch.Tensor, scores: torch.Tensor, *, lr: float, sign: float = 1.0) -> torch.Tensor:
    """Exponentiated-gradient step ``w <- w * exp(sign * lr * I)``, rescaled to mean 1 (§7 b)."""
    if weights.shape != scores.shape:
        raise ValueError(
            f"`weights` and `scores` must have one shape, got {weights.shape} and {scores.shape}."
        )
    # In log space, shifted by the maximum: the same ratios, without exp overflowing to inf/inf = NaN
    # when lr * I is large (the rescaling to mean 1 cancels the shift).
    logits = torch.log(weights) + sign * lr * scores
    stepped = torch.exp(logits - logits.max())
    return stepped / stepped.sum() * stepped.numel()


def preference_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
) -> torch.Tensor:
    """U2A's ``J``: the DPO sigmoid loss on summed log-probs of the validation pairs, summed over pairs.

    ``-logsigmoid(beta * ((lp_c - lr_c) - (lp_r - lr_r)))`` per pair (the official code's beta_J = 0.3);
    a sum, so the caller divides by the number of pairs for a mean over several batches.
    """
    _check_positive("beta", beta)
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).sum()
