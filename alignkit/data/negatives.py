"""Choosing N negatives per prompt from a larger pool, once per run or afresh each epoch (S-DPO).

The S-DPO code draws N distinct negatives per prompt once, under a fixed seed; redrawing them each
epoch is an opt-in deviation (``resample_negatives_each_epoch``). Either way a draw depends only on
``(seed, epoch, row index)``, so every rank and a resumed run draw the same negatives.
"""

from __future__ import annotations

import random

import datasets
from torch.utils.data import Dataset as TorchDataset

# Encoded columns that hold one entry per completion of a row.
PER_COMPLETION = ("prompt_ids", "completion_ids", "roles", "scores", "ref_logps")


def pick_negatives(pool: int, n: int | None, *, seed: int, index: int, epoch: int = 0) -> list[int]:
    """Positions (sorted, within ``range(pool)``) of the negatives a row uses: all, or ``n`` distinct draws."""
    if n is None or pool <= n:
        return list(range(pool))
    return sorted(random.Random(f"negatives-{seed}-{epoch}-{index}").sample(range(pool), n))


class ResampledNegatives(TorchDataset):
    """Encoded 1-vs-N rows (chosen first) whose negatives are redrawn from the row's pool each epoch."""

    def __init__(self, encoded: datasets.Dataset, num_negatives: int, seed: int = 0):
        self.encoded, self.num_negatives, self.seed, self.epoch = encoded, num_negatives, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> dict:
        row = dict(self.encoded[index])
        pool = len(row["completion_ids"]) - 1
        keep = [0] + [
            1 + j
            for j in pick_negatives(pool, self.num_negatives, seed=self.seed, index=index, epoch=self.epoch)
        ]
        for key in PER_COMPLETION:
            if key in row:
                row[key] = [row[key][j] for j in keep]
        return row
