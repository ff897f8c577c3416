"""What the token-mean ranking methods (AFT, RRHF, PRO) share: list values from a row, the dense view.

A row is a ranked list (``completions`` + ``scores`` / ``ranks`` / ``labels``) or, read as a two-level
list, a pairwise / 1-vs-N row (``chosen`` 1, each ``rejected`` 0). Ranks become ``-rank`` (only the
order is used where they are accepted); a method whose loss reads reward *gaps* (PRO) refuses ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit.data import PreferenceRecord, RecordError
from alignkit.data.collator import to_dense
from alignkit.data.records import ROLE_IDS
from alignkit.trainers.forward import ForwardOutput


def list_values(record: PreferenceRecord, err, method: str, *, ranks: bool = True) -> list[float]:
    """Higher-is-better values of a record's completions, from whatever the row gave (module docstring)."""
    kind = record.score_kind
    if kind is None:
        if "chosen" not in record.roles:
            raise err(
                "rejected",
                f"a negatives-only row has nothing to rank; {method} needs a list with scores or a chosen answer",
            )
        return [1.0 if role == "chosen" else 0.0 for role in record.roles]
    if kind == "ranks":
        if not ranks:
            raise err(
                "ranks",
                f"{method} weighs pairs by reward gaps, which ranks do not give; pass raw `scores`",
            )
        return [-r for r in record.scores]
    return list(record.scores)


def ranked_record(record: PreferenceRecord, values: list[float], reference=None) -> PreferenceRecord:
    """``[reference?, y_1..y_K]`` with roles ``answer`` / ``ranked`` and the values as scores."""
    head = [] if reference is None else [reference]
    return PreferenceRecord(
        record.prompt,
        [*head, *record.completions],
        ["answer"] * len(head) + ["ranked"] * len(values),
        [0.0] * len(head) + [float(v) for v in values],
        score_kind="scores",
    )


def check_size(record: PreferenceRecord, limit: int | None, err) -> None:
    if limit is not None and len(record.completions) > limit:
        raise err(
            "completions",
            f"has K={len(record.completions)} completions, more than `max_completions={limit}`; "
            "raise `max_completions` or shorten the list",
        )


@dataclass
class DenseLists:
    """The ranked items of a batch as ``[B, K]`` (reference rows excluded) and per-item token tensors."""

    logps: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    valid: torch.Tensor
    token_logps: torch.Tensor  # [B, K, T]
    mask: torch.Tensor  # [B, K, T]


def dense_lists(out: ForwardOutput) -> DenseLists:
    policy = out.policy
    logps, valid = to_dense(policy.seq_logps, out.group_sizes)
    roles, _ = to_dense(out.roles, out.group_sizes, fill=-1)
    valid = valid & (roles == ROLE_IDS["ranked"])
    return DenseLists(
        logps,
        to_dense(policy.lengths.to(logps.dtype), out.group_sizes)[0],
        to_dense(out.scores.to(logps.dtype), out.group_sizes)[0],
        valid,
        to_dense(policy.token_logps, out.group_sizes)[0],
        to_dense(policy.mask, out.group_sizes)[0],
    )


def row_error(index: int):
    def err(field_name: str, problem: str) -> RecordError:
        return RecordError("train_dataset", index, field_name, problem)

    return err
