"""Encode the prompt of a list once: the K completions of a prompt packed into one row.

The collator lays a list out as K rows ``prompt + completion_k``, so the prompt is encoded K times.
Packed, a list is one row ``prompt[:-1] | prompt[-1] c_1 | prompt[-1] c_2 | ...`` with an
attention mask in which each segment sees the shared prefix and itself, and position ids that
restart at ``len(prompt) - 1`` in every segment. Every completion token then has exactly the
context it has in the flat layout, so the log-probs are the flat ones up to float rounding.

The prompt's last token is repeated at the head of each segment (one token per completion) so that
every position has one next-token label: the first completion token of every segment is predicted
from that segment's own copy, which is what lets TRL's fused LM head (labels per position) run on
the packed rows unchanged.

Rows that share no prompt with their neighbour (unlearning: one completion per prompt) gain
nothing; ``pack`` returns ``None`` for a batch without a list of two or more and the caller runs
the flat forward. Needs an attention implementation that takes a custom 4-D mask (eager, sdpa);
flash-attention variants take only 2-D masks, so those models stay flat too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit.models.attention_cost import layout_cost, worth_sharing

IGNORE = -100
MASKABLE = ("eager", "sdpa")

# ``share_prompt="auto"``: pack a batch only where the estimated saving clears the measured crossover
# (docs/performance.md, "share_prompt: auto"). A layout's cost is estimated as its token positions (padding
# included) plus its attention score pairs divided by ``PAIRS_PER_POSITION * hidden_size``: a flat row of
# width W attends causally (W(W+1)/2 pairs), a packed row through a dense block mask (W^2 pairs: the masked
# kernel skips nothing). The LM head is left out: the compact head scores the same completion positions in
# both layouts. Measured (scripts/bench_share_prompt.py, 13 points, K 2 and 4, prompt:completion 1/4 to 8,
# 32 to 1,280 tokens per row): with 4 the predicted flat/packed cost ratio tracks the measured speed-up
# within ~0.1 (rank correlation 0.96); the two points slower packed are predicted 0.82 and 0.95, the next
# (1.00) measured 1.04 with an IQR reaching 0.98; the point predicted 1.08 (2 x 1,280-token rows) measured
# 1.17x in that run but 0.95x when timed again under auto, and every point predicted >= 1.19 was >= 1.22x
# faster packed both times. So batches predicted >= 1.10 are packed.
# The constants live with the scoring side's use of the same model (alignkit.models.attention_cost).


@dataclass
class Packed:
    input_ids: torch.Tensor  # [G, T]
    position_ids: torch.Tensor  # [G, T]
    allowed: torch.Tensor  # [G, 1, T, T] bool: query t may attend to key s
    labels: torch.Tensor  # [G, T] next-token id scored at each position, IGNORE elsewhere
    # Where each flat completion log-prob lives: flat [row, col] <- packed [group, pos].
    flat_index: tuple[torch.Tensor, torch.Tensor]
    packed_index: tuple[torch.Tensor, torch.Tensor]

    def unpack(self, packed_values: torch.Tensor, flat_shape: tuple[int, int]) -> torch.Tensor:
        """Per-position packed values ``[G, T]`` → the flat layout ``[N, L-1]`` (0 off the completions)."""
        flat = packed_values.new_zeros(flat_shape)
        flat[self.flat_index] = packed_values[self.packed_index]
        return flat

    def attention_mask(self, implementation: str, dtype: torch.dtype) -> torch.Tensor:
        """The 4-D mask as the attention implementation reads it: sdpa a bool mask, eager an additive one."""
        if implementation == "sdpa":
            return self.allowed
        return torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device).masked_fill(
            ~self.allowed, torch.finfo(dtype).min
        )


def _rows(input_ids, attention_mask, completion_mask):
    """(prompt ids, completion ids) per row, or None if a row is not ``prompt + completion + padding``."""
    rows = []
    for ids, att, comp in zip(input_ids.tolist(), attention_mask.tolist(), completion_mask.tolist()):
        length = sum(att)
        start = comp.index(1) if 1 in comp else length
        if att[:length] != [1] * length or comp[start:length] != [1] * (length - start) or start == 0:
            return None
        rows.append((ids[:start], ids[start:length]))
    return rows


def _groups(batch: dict):
    """``(rows, groups)``: each row's (prompt, completion) ids and the runs of neighbouring rows that share
    a prompt; None when no two neighbouring rows share one (or a row is not prompt + completion)."""
    rows = _rows(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    if rows is None:
        return None
    groups: list[list[int]] = []
    for i, (prompt, _) in enumerate(rows):
        if groups and rows[groups[-1][0]][0] == prompt:
            groups[-1].append(i)
        else:
            groups.append([i])
    return None if all(len(g) == 1 for g in groups) else (rows, groups)


def pack(batch: dict, hidden_size: int | None = None) -> Packed | None:
    """The packed layout of ``batch``'s rows, or None when no two neighbouring rows share a prompt.

    With ``hidden_size`` (``share_prompt="auto"``) also None where :func:`worth_packing` says flat is
    cheaper; that is decided from the rows' lengths, before any packed tensor is built.
    """
    input_ids = batch["input_ids"]
    layout = _groups(batch)
    if layout is None or (hidden_size is not None and not _worth(batch, layout, hidden_size)):
        return None
    rows, groups = layout

    tokens, positions, segments, labels = [], [], [], []
    flat_rows, flat_cols, packed_rows, packed_cols = [], [], [], []
    for g, members in enumerate(groups):
        prompt = rows[members[0]][0]
        p = len(prompt)
        tok, pos, seg, lab = prompt[:-1], list(range(p - 1)), [0] * (p - 1), [IGNORE] * (p - 1)
        for k, i in enumerate(members, start=1):
            completion = rows[i][1]
            start = len(tok)
            tok += [prompt[-1], *completion]
            pos += list(range(p - 1, p + len(completion)))
            seg += [k] * (len(completion) + 1)
            lab += [*completion, IGNORE]
            flat_rows += [i] * len(completion)
            flat_cols += range(p - 1, p - 1 + len(completion))
            packed_rows += [g] * len(completion)
            packed_cols += range(start, start + len(completion))
        tokens.append(tok)
        positions.append(pos)
        segments.append(seg)
        labels.append(lab)

    width = max(len(t) for t in tokens)
    device = input_ids.device

    def padded(values, fill):
        return torch.tensor([v + [fill] * (width - len(v)) for v in values], dtype=torch.long, device=device)

    seg = padded(segments, -1)  # -1: padding
    q, kv = seg[:, :, None], seg[:, None, :]
    index = torch.arange(width, device=device)
    causal = index[None, :, None] >= index[None, None, :]
    allowed = causal & (kv != -1) & ((kv == 0) | (kv == q))
    allowed |= torch.eye(width, dtype=torch.bool, device=device)  # padding attends to itself: no empty row
    as_long = dict(dtype=torch.long, device=device)
    return Packed(
        input_ids=padded(tokens, 0),
        position_ids=padded(positions, 0),
        allowed=allowed[:, None],
        labels=padded(labels, IGNORE),
        flat_index=(torch.tensor(flat_rows, **as_long), torch.tensor(flat_cols, **as_long)),
        packed_index=(torch.tensor(packed_rows, **as_long), torch.tensor(packed_cols, **as_long)),
    )


def attention_implementation(model) -> str | None:
    """The attention implementation of a (possibly DDP- or PEFT-wrapped) model; packing needs one of MASKABLE."""
    config = getattr(getattr(model, "module", model), "config", None)
    return getattr(config, "_attn_implementation", None)


def estimated_costs(batch: dict, hidden_size: int, layout=None) -> tuple[float, float]:
    """``(flat, packed)`` estimated forward costs of ``batch``'s rows (see :data:`AUTO_MIN_RATIO`)."""
    rows, groups = layout or _groups(batch)
    width = int(batch["attention_mask"].sum(-1).max())
    packed_width = max(len(rows[g[0]][0]) - 1 + sum(len(rows[i][1]) + 1 for i in g) for g in groups)
    flat = layout_cost(len(rows), width, width * (width + 1) / 2, hidden_size)  # causal
    return flat, layout_cost(len(groups), packed_width, packed_width**2, hidden_size)  # dense block mask


def _worth(batch: dict, layout, hidden_size: int) -> bool:
    return worth_sharing(*estimated_costs(batch, hidden_size, layout))


def worth_packing(batch: dict, hidden_size: int) -> bool:
    """The ``auto`` rule: pack when the flat layout's estimated cost is ``AUTO_MIN_RATIO`` x the packed one's
    (False where the rows share no prompt)."""
    layout = _groups(batch)
    return layout is not None and _worth(batch, layout, hidden_size)
