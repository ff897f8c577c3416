"""Gradient entanglement between two log-likelihoods (Yuan et al., arXiv 2410.13828; align spec §6.2).

For a margin loss, one plain gradient step moves the chosen log-prob by ``C (|g_w|^2 - <g_w, g_l>)``
and the rejected one by ``C (<g_w, g_l> - |g_l|^2)`` (first order, ``C = lr·β·σ(−β m)`` for DPO):
the chosen goes up iff ``κ_w = <g_w,g_l>/|g_w|^2 <= 1``, the rejected goes down iff
``κ_l = <g_w,g_l>/|g_l|^2 <= 1``. Both > 1 cannot happen (Cauchy-Schwarz).
"""

from __future__ import annotations

import torch

__all__ = ["entanglement_stats"]


def entanglement_stats(g_w: torch.Tensor, g_l: torch.Tensor) -> dict[str, float]:
    """Inner product, cosine, squared norms, κ's, the case and the first-order moves of one pair.

    ``g_w``/``g_l``: flat gradients of the summed completion log-probs of the chosen (for unlearning: a
    retain answer) and rejected (a forget answer) completion over the same parameter set. ``case``:
    ``ideal`` (chosen up, rejected down), ``both_down`` (κ_w > 1) or ``both_up`` (κ_l > 1). ``move_*`` are the
    DPO moves per unit C; ``norm_move_*`` those of the pairwise normalised gradient (η c = 1).
    """
    g_w, g_l = g_w.reshape(-1).double(), g_l.reshape(-1).double()
    ip, nw2, nl2 = float(g_w @ g_l), float(g_w @ g_w), float(g_l @ g_l)
    cos = ip / (nw2 * nl2) ** 0.5 if nw2 > 0 and nl2 > 0 else 0.0
    kappa_w = ip / nw2 if nw2 > 0 else 0.0
    kappa_l = ip / nl2 if nl2 > 0 else 0.0
    case = "both_down" if kappa_w > 1 else "both_up" if kappa_l > 1 else "ideal"
    return {
        "ip": ip,
        "cos": cos,
        "norm_w2": nw2,
        "norm_l2": nl2,
        "kappa_w": kappa_w,
        "kappa_l": kappa_l,
        "chosen_up": float(ip <= nw2),
        "rejected_down": float(ip <= nl2),
        "move_w": nw2 - ip,
        "move_l": ip - nl2,
        "norm_move_w": nw2**0.5 * (1 - cos),
        "norm_move_l": -(nl2**0.5) * (1 - cos),
        "case": case,
    }
