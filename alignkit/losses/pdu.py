"""PDU's forget loss: flatten the logits on the forget set (Entesari et al., arXiv 2506.05314).

``F = mean over positions of (max_v z_v - mean_v z_v)^2`` (spec ``methods-unlearning.md`` §10,
open-unlearning ``trainer/unlearn/pdu.py``): driving the top logit down to the average makes the
next-token distribution flat (maximum entropy) without pushing any token's probability to zero.
"""

from __future__ import annotations

from typing import Literal

import torch

from alignkit.losses.core import LossOutput, _detached, _upcast
from alignkit.models.head import map_positions

__all__ = ["pdu_forget_loss"]


def _logit_gap(logits: torch.Tensor) -> torch.Tensor:
    """``max_v z - mean_v z`` per position, ``[M, V]`` -> ``[M]`` (fp32)."""
    z = _upcast(logits)
    return z.max(-1).values - z.mean(-1)


def pdu_forget_loss(
    logits: torch.Tensor, mask: torch.Tensor, *, positions: Literal["answer", "all"] = "answer"
) -> LossOutput:
    """``mean (max_v z - mean_v z)^2`` over answer positions (``mask``), or over all ``N*T`` positions.

    ``positions="all"`` is open-unlearning's code, which averages over every position of the batch,
    prompt and padding included; ``"answer"`` (default) is the spec's reading. ``logits``: ``[N, T, V]``
    (or :class:`~alignkit.models.head.HeadLogits`, then a chunk of positions at a time) aligned with ``mask`` ``[N, T]``; computed in fp32.
    """
    if positions not in ("answer", "all"):
        raise ValueError(f"`positions` must be 'answer' or 'all', got {positions!r}.")
    gap = map_positions(_logit_gap, (logits,), mask if positions == "answer" else None)
    loss = (gap**2).mean() if gap.numel() else gap.sum()
    return LossOutput(loss, _detached({"forget/logit_gap": gap.mean() if gap.numel() else gap.sum()}))
