"""What a run records about itself: the file names of a run folder, its hyperparameters, derived numbers.

Owned by the trainers layer because everything here is read off a trainer and its config; the
launcher (``run_info.json``, the plan it prints) and the model card (``hub``) both build on it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import fields
from typing import Any

from alignkit._version import __version__

RUN_INFO = "run_info.json"
RESOLVED_RECIPE = "alignkit_recipe.yaml"
# Training arguments worth recording in run_info.json and the model card (besides the method's own).
TRAINING_KEYS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "optim",
    "max_grad_norm",
    "seed",
    "bf16",
    "fp16",
    "activation_checkpointing",
    "gradient_checkpointing",
)


def plain(value):
    """A YAML/JSON-safe copy of a parsed value (enums by value, tuples as lists)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def config_fields(config) -> dict[str, Any]:
    """The method's own hyperparameters: fields its config adds on top of ``TrainingArguments``."""
    from transformers import TrainingArguments

    base = {f.name for f in fields(TrainingArguments)}
    return {f.name: plain(getattr(config, f.name)) for f in fields(config) if f.name not in base}


def hyperparameters(args) -> dict[str, Any]:
    """The training arguments in :data:`TRAINING_KEYS` plus the method's own config fields."""
    hyper = {k: plain(getattr(args, k, None)) for k in TRAINING_KEYS if hasattr(args, k)}
    hyper.update(config_fields(args))
    hyper.pop("model_init_kwargs", None)
    return hyper


def derived_numbers(trainer) -> dict[str, Any]:
    """Global batch and step counts, printed before training (nanoGPT habit) and kept in run_info."""
    a = trainer.args
    world = max(1, a.world_size)
    rows = len(trainer.train_dataset) if trainer.train_dataset is not None else 0
    per_step = a.per_device_train_batch_size * a.gradient_accumulation_steps * world
    micro_batches = math.ceil(rows / (a.per_device_train_batch_size * world)) if rows else 0
    steps_per_epoch = max(1, micro_batches // a.gradient_accumulation_steps) if rows else 0
    total = (
        a.max_steps if a.max_steps and a.max_steps > 0 else math.ceil(a.num_train_epochs * steps_per_epoch)
    )
    return {
        "world_size": world,
        "global_batch_size": per_step,
        "train_rows": rows,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
    }


def run_info_from_trainer(trainer) -> dict:
    """What a card needs, from a live trainer (runs not started by ``alignkit train``)."""
    model = (
        trainer.accelerator.unwrap_model(trainer.model) if hasattr(trainer, "accelerator") else trainer.model
    )
    is_lora = hasattr(model, "peft_config")
    config = getattr(model, "config", None)
    base = getattr(config, "_name_or_path", None) if config is not None else None
    if is_lora:
        peft_cfg = next(iter(model.peft_config.values()))
        base = getattr(peft_cfg, "base_model_name_or_path", base)
    args = trainer.args
    data = {}
    if trainer.train_dataset is not None:
        data["train"] = {"source": "in-memory dataset", "config": None, "rows": len(trainer.train_dataset)}
    return {
        "alignkit_version": __version__,
        "method": trainer.method_name,
        "method_summary": "",
        "trainer": type(trainer).__name__,
        "paper": dict(type(trainer).paper or {}),
        "base_model": base,
        "model_kind": "lora" if is_lora else "full",
        "reference": {"mode": getattr(trainer, "ref_mode", None), "model": None},
        "lm_head": getattr(trainer, "lm_head_path", None),  # which LM head path ran (fused_lm_head)
        "datasets": data,
        "hyperparameters": hyperparameters(args),
        "derived": {"world_size": args.world_size},
        "distributed": str(trainer.accelerator.distributed_type).split(".")[-1],
        "train": {"global_step": trainer.state.global_step},
    }
