"""WPN, weighted positional N-pair unlearning (arXiv 2408.09459; methods-alignment-2.md §6).

Pure functions. Confirmed from the abstract and its Figure 1: position-weighted mean pooling of text
representations inside an N-pair contrastive loss that moves a harmful prompt towards a harmless response
and away from harmful outputs. The pooling weights are SGPT's (arXiv 2202.08904), whose name WPN uses.
Everything else (which hidden state, the anchor, cosine similarity, the temperature) is a
RECONSTRUCTION (§6 b, d); each choice is a keyword here and a config switch on the trainer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.losses.core import LossOutput, _check_positive, _detached, _upcast

__all__ = ["WPN_SIMILARITIES", "position_weighted_pool", "wpn_loss"]

WPN_SIMILARITIES = ("cos", "dot")


def position_weighted_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SGPT's position-weighted mean over the masked span of each row: ``[N, L, d], [N, L] -> [N, d]``.

    ``e = sum_t w_t h_t`` with ``w_t = t / sum_{u=1..n} u`` where ``t`` counts the span's valid tokens
    (the mask's cumulative sum), so left or right padding and where the span starts do not change ``e``.
    Later tokens weigh more: a causal model's later states have read more of the text. Masked positions
    may hold anything (NaN included): they are selected out, never multiplied in. A row with an empty
    span pools to zeros.
    """
    if hidden.dim() != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"`hidden` must be [N, L, d] and `mask` [N, L], got {tuple(hidden.shape)} and {tuple(mask.shape)}."
        )
    hidden = _upcast(hidden)
    mask = mask.bool()
    position = mask.long().cumsum(-1).to(hidden.dtype)
    weight = torch.where(mask, position, 0.0)
    total = weight.sum(-1, keepdim=True).clamp_min(1.0)
    summed = torch.where(mask[..., None], hidden * weight[..., None], 0.0).sum(1)
    return summed / total


def _similarity(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cos":
        return F.cosine_similarity(x, y, dim=-1)
    return (x * y).sum(-1)


def wpn_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    negative_valid: torch.Tensor,
    *,
    temperature: float = 0.1,
    similarity: str = "cos",
) -> LossOutput:
    """N-pair (InfoNCE) loss of §6(b): the anchor close to the harmless response, far from the harmful ones.

    ``anchor`` and ``positive`` ``[B, d]``, ``negatives`` ``[B, N, d]``, ``negative_valid`` ``[B, N]``:
    ``L = mean_b -log( e^{s(a,p)/tau} / (e^{s(a,p)/tau} + sum_j e^{s(a,n_j)/tau}) )`` with ``s`` the cosine
    (default) or the dot product; invalid negatives enter the log-sum-exp as ``-inf``. Computed in fp32 or
    wider. Metrics: mean ``cos(a, p)``, mean of each prompt's largest ``cos(a, n_j)``, and ``solved``, the
    share of prompts whose positive already beats every negative (low temperatures saturate: §6 f).
    """
    _check_positive("temperature", temperature)
    if similarity not in WPN_SIMILARITIES:
        raise ValueError(f"`similarity` must be one of {WPN_SIMILARITIES}, got {similarity!r}.")
    if negatives.dim() != 3 or negative_valid.shape != negatives.shape[:2]:
        raise ValueError(
            f"`negatives` must be [B, N, d] and `negative_valid` [B, N], got {tuple(negatives.shape)} "
            f"and {tuple(negative_valid.shape)}."
        )
    anchor, positive, negatives = _upcast(anchor), _upcast(positive), _upcast(negatives)
    valid = negative_valid.bool()
    s_pos = _similarity(anchor, positive, similarity) / temperature
    # Invalid slots are zero vectors (to_dense's fill): select them out before the log-sum-exp.
    s_neg = torch.where(valid, _similarity(anchor[:, None], negatives, similarity) / temperature, -torch.inf)
    logits = torch.cat([s_pos[:, None], s_neg], dim=1)
    loss = (torch.logsumexp(logits, dim=1) - s_pos).mean()
    with torch.no_grad():
        cos_pos = F.cosine_similarity(anchor, positive, dim=-1)
        cos_neg = torch.where(valid, F.cosine_similarity(anchor[:, None], negatives, dim=-1), -torch.inf)
        best_neg = cos_neg.max(1).values
        metrics = {
            "wpn/cos_positive": cos_pos.mean(),
            "wpn/cos_negative_max": best_neg[torch.isfinite(best_neg)].mean()
            if bool(torch.isfinite(best_neg).any())
            else best_neg.new_tensor(float("nan")),
            "wpn/solved": (cos_pos > best_neg).to(cos_pos.dtype).mean(),
        }
    return LossOutput(loss, _detached(metrics))
