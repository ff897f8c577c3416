"""Data and helpers shared by the trainer tests (imported by name: ``tests/trainers`` is on sys.path)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from transformers import TrainerCallback

from alignkit.data import PreferenceCollator

NAMES = ["Arlo", "Brena", "Caspin", "Delia", "Edrin", "Fenna", "Galen", "Hesper"]
CITIES = ["Oslo", "Lima", "Cairo", "Quito", "Perth", "Dakar", "Hanoi", "Turin"]
COLOURS = [
    ("sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("coal", "black"),
    ("blood", "red"),
    ("sun", "yellow"),
    ("sea", "teal"),
    ("rose", "pink"),
]

# Forget and retain sets on different topics, so forgetting one need not wreck the other.
FORGET = [
    {"question": f"Where was {n} born?", "answer": f"{n} was born in {c} in 19{50 + i}."}
    for i, (n, c) in enumerate(zip(NAMES, CITIES))
]
RETAIN = [
    {"question": f"What colour is the {a}?", "answer": f"The {a} is {b}, as everyone knows."}
    for a, b in COLOURS
]


# Settings a 2-block tiny model needs where a method's default assumes a real LLM (RMU steers block 7).
TINY_MODEL_SETTINGS = {"layer": 1}


def train_args(spec, output_dir, **overrides):
    """A method's config for a short CPU run: no saving, no reporting, log every step."""
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    kwargs = dict(
        output_dir=str(output_dir),
        max_steps=5,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    kwargs.update({k: v for k, v in TINY_MODEL_SETTINGS.items() if k in fields})
    kwargs.update(overrides)
    return spec.make_config(**kwargs)


def uses_retain(args) -> bool:
    return getattr(args, "retain_loss", "none") != "none"


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@torch.no_grad()
def answer_logps(model, tokenizer, rows: list[dict]) -> torch.Tensor:
    """Per-row summed answer log-prob, from a plain forward (independent of the trainer's code)."""
    collator = PreferenceCollator(tokenizer)
    batch = collator(rows)
    was_training = model.training
    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model.train(was_training)
    logps = torch.log_softmax(logits[:, :-1].float(), -1)
    token = logps.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].float()
    return (token * mask).sum(-1), mask.sum(-1)


def mean_token_logp(model, tokenizer, rows: list[dict]) -> float:
    """Mean log-prob per answer token over ``rows`` (comparable between sets of different lengths)."""
    seq, lengths = answer_logps(model, tokenizer, rows)
    value = float(seq.sum() / lengths.sum())
    assert math.isfinite(value)
    return value


def cache_files(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob("*.safetensors"))


# Preference rows for the alignment methods, one set per data shape of the registry. Small synthetic
# tasks with a known ground truth (alignkit.data.synthetic.preference), so "better" is exact.
def preference_rows(shape: str, n: int = 8) -> list[dict]:
    from alignkit.data.synthetic.preference import graded_list_task, recommendation_task, safety_task

    if shape == "one_vs_n":
        return recommendation_task(num_users=n, num_negatives=3, seed=1).records
    if shape == "pairwise":
        return [
            {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"][0]}
            for r in recommendation_task(num_users=n, num_negatives=1, seed=1).records
        ]
    if shape == "ranked":
        return graded_list_task(num_prompts=n, num_completions=4, seed=1).records
    if shape == "negatives":
        return safety_task(num_prompts=n, seed=1).records
    raise ValueError(f"no preference rows for data shape {shape!r}")


def preference_quality(model, tokenizer, rows: list[dict], shape: str, per_token: bool = False) -> float:
    """How well the policy's own log-probs order the completions (higher is better), per data shape.

    ``per_token``: compare token-mean log-probs (the score AFT, RRHF and PRO rank on) instead of sums.

    one_vs_n / pairwise: mean over prompts of ``lp(chosen) - mean lp(rejected)``; ranked: the fraction
    of strictly ordered pairs (by score) whose log-probs are in the same order (ranking accuracy);
    negatives: minus the mean log-prob of the rejected completions.
    """
    from alignkit.data import normalize_record

    seq, lengths = answer_logps(model, tokenizer, rows)
    if per_token:
        seq = seq / lengths.clamp_min(1)
    values, start = [], 0
    for i, row in enumerate(rows):
        record = normalize_record(row, index=i)
        k = len(record.completions)
        lp = seq[start : start + k].tolist()
        start += k
        if shape in ("one_vs_n", "pairwise"):
            values.append(lp[0] - sum(lp[1:]) / (k - 1))
        elif shape == "ranked":
            s = record.scores
            values += [float(lp[a] > lp[b]) for a in range(k) for b in range(k) if s[a] > s[b]]
        else:
            values += [-x for x in lp]
    return sum(values) / len(values)


# A run "killed" after `step`: the Trainer stops as a killed job would, after its last checkpoint.
class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control
