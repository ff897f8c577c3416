"""Synthetic harmful-output tasks for WPN and U2A (offline stand-ins with an exact scorer).

* :func:`harmless_response_task`: the safety task of :mod:`.preference` in WPN's shape (§6 a): each
  prompt with its harmless reply as ``chosen`` and the flagged replies as ``rejected``.
* :func:`planted_negatives_task`: U2A's setting (§7 a): negatives of which some are worth unlearning
  (flagged replies, whose removal helps the preference objective) and some are not (harmless replies
  mislabelled as negatives, whose removal costs helpfulness), with a validation set of preference pairs.
"""

from __future__ import annotations

import random

from alignkit.data.synthetic.preference import PreferenceTask, safety_task


def harmless_response_task(
    num_prompts: int = 200, *, negatives_per_prompt: int = 2, seed: int = 0
) -> PreferenceTask:
    """1-vs-N rows ``{"prompt", "chosen": harmless reply, "rejected": [flagged replies]}``.

    The prompts, replies and exact scorer (1.0 unless flagged) are those of ``safety_task`` with the same
    arguments; ``meta[i]`` keeps ``safe``, ``subject`` and ``situation``.
    """
    base = safety_task(num_prompts, negatives_per_prompt=negatives_per_prompt, seed=seed)
    records = []
    for record, meta in zip(base.records, base.meta):
        rejected = record["rejected"] if isinstance(record["rejected"], list) else [record["rejected"]]
        records.append({"prompt": record["prompt"], "chosen": meta["safe"], "rejected": rejected})
    return PreferenceTask("harmless_response", "one_vs_n", records, base.meta, base.scorer)


def planted_negatives_task(
    num_prompts: int = 80, *, harmless_share: float = 0.5, num_validation: int = 16, seed: int = 0
) -> dict:
    """Negatives for U2A: a share are harmless replies mislabelled as negatives.

    Returns ``{"forget": [{"prompt", "completion"}], "helpful": [bool per forget row: True when the row
    is a flagged reply, whose unlearning helps], "validation": [{"prompt", "chosen", "rejected"}],
    "task": the PreferenceTask the prompts come from}``. Validation pairs use prompts not in ``forget``.
    """
    if not 0.0 <= harmless_share <= 1.0:
        raise ValueError(f"harmless_share must be in [0, 1], got {harmless_share}")
    task = safety_task(num_prompts + num_validation, negatives_per_prompt=1, seed=seed)
    rng = random.Random(f"alignkit-planted-{seed}")
    order = list(range(num_prompts))
    rng.shuffle(order)
    harmless = set(order[: round(harmless_share * num_prompts)])
    forget, helpful = [], []
    for i in range(num_prompts):
        record, meta = task.records[i], task.meta[i]
        planted = i in harmless
        forget.append(
            {"prompt": record["prompt"], "completion": meta["safe"] if planted else record["rejected"]}
        )
        helpful.append(not planted)
    validation = [
        {
            "prompt": task.records[i]["prompt"],
            "chosen": task.meta[i]["safe"],
            "rejected": task.records[i]["rejected"],
        }
        for i in range(num_prompts, num_prompts + num_validation)
    ]
    return {"forget": forget, "helpful": helpful, "validation": validation, "task": task}


PLANTED_PARTS = ("forget", "validation", "sft")


def planted_rows(
    part: str = "forget",
    num_prompts: int = 80,
    harmless_share: float = 0.5,
    num_validation: int = 16,
    seed: int = 0,
) -> PreferenceTask:
    """:func:`planted_negatives_task` as a recipe source (``synthetic:planted_negatives``): ``part=forget``
    gives the mixed negatives as ``{"prompt", "completion"}`` rows (meta ``helpful``), ``part=validation``
    the preference pairs U2A's objective is measured on (``u2a_validation_dataset``), ``part=sft`` the
    starting model's training rows (every prompt of both parts with its flagged and its safe reply, so
    that the model says flagged things: something to unlearn)."""
    if part not in PLANTED_PARTS:
        raise ValueError(f"part must be one of {PLANTED_PARTS}, got {part!r}")
    planted = planted_negatives_task(
        num_prompts, harmless_share=harmless_share, num_validation=num_validation, seed=seed
    )
    task = planted["task"]
    if part == "sft":
        rows = [
            {"prompt": r["prompt"], "completion": c}
            for r, m in zip(task.records, task.meta)
            for c in (r["rejected"], m["safe"])
        ]
    else:
        rows = planted[part]
    meta = [{"helpful": h} for h in planted["helpful"]] if part == "forget" else [{} for _ in rows]
    shape = "pairwise" if part == "validation" else "qa"
    return PreferenceTask("planted_negatives", shape, rows, meta, planted["task"].scorer)
