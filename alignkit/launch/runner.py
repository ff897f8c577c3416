"""Run a recipe: build the model, tokenizer, datasets and trainer; train; save what ``push`` reads.

Also the entry point for multi-process launches: every process of
``accelerate launch ... -m alignkit.cli train RECIPE.yaml`` runs :func:`run_recipe`; printing and
writing happen on the main process only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit._version import __version__
from alignkit.launch import summary
from alignkit.launch.recipe import Recipe, RecipeError, resumes
from alignkit.launch.sources import (
    build_synthetic_model,
    chunk_text_rows,
    dataset_texts,
    load_source,
    load_tagged_configs,
    local_files,
)
from alignkit.models.source import check_pretrained_source, is_hub_id
from alignkit.trainers.run_info import (
    RESOLVED_RECIPE,
    RUN_INFO,
    TRAINING_KEYS,
    derived_numbers,
    hyperparameters,
    plain,
    prompt_format,
)

logger = logging.getLogger(__name__)


@dataclass
class Built:
    """What :func:`build` made, and what the summary prints about it."""

    trainer: Any
    model_path: str
    base_model: str  # what the recipe named (a Hub id, a path, or synthetic:tiny?...)
    datasets: dict[str, dict]
    tokenizer: Any
    setup_seconds: float = 0.0
    quantization: str | None = None
    notes: list[str] = field(default_factory=list)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _quantization_config(recipe: Recipe):
    from trl import get_quantization_config

    m = recipe.model
    if not (m.load_in_4bit or m.load_in_8bit):
        return None
    import importlib.util

    import torch

    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes is not installed (pip install 'alignkit[quant]')")
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible")
    if missing:
        which = "load_in_4bit" if m.load_in_4bit else "load_in_8bit"
        raise RecipeError(
            f"`{which}: true` needs bitsandbytes and a CUDA GPU, but {' and '.join(missing)}. "
            f"Run on a GPU machine, or drop `{which}` (full-precision LoRA: keep `use_peft: true`)."
        )
    return get_quantization_config(m)


def load_datasets(recipe: Recipe, tokenizer=None) -> dict[str, Any]:
    """The recipe's train/retain/eval rows (chunked when ``text_chunk_tokens`` is set)."""
    s = recipe.script
    out = {}
    for role in ("train", "retain", "eval"):
        source = getattr(s, f"{role}_dataset")
        if not source:
            continue
        config, split = getattr(s, f"{role}_dataset_config"), getattr(s, f"{role}_dataset_split")
        if s.dataset_preset and role in ("train", "eval"):  # the retain set keeps its own shape
            from alignkit.data.presets import load_preset_rows

            rows = load_preset_rows(
                source, s.dataset_preset, config, split, on_invalid=recipe.training.on_invalid
            )
        elif role == "train" and getattr(recipe.training, "topic_field", None) == "dataset_config" and config:
            rows = load_tagged_configs(source, config, split)  # RMU: one control vector per forget corpus
        else:
            rows = load_source(source, config, split)
        if s.text_chunk_tokens and tokenizer is not None:
            rows = chunk_text_rows(rows, tokenizer, s.text_chunk_tokens)
        out[role] = rows
    return out


def _from_hub(load, name: str, flag: str, **kwargs):
    """``load(name, **kwargs)``; a Hub id that cannot be fetched (no such repository, gated, the
    endpoint answering with an error) is one line naming the key, with transformers' own reason."""
    try:
        return load(name, **kwargs)
    except OSError as err:
        if not is_hub_id(name):
            raise
        raise RecipeError(f"`{flag}`: {name!r} could not be loaded: {' '.join(str(err).split())}") from None


def build(recipe: Recipe, callbacks=None) -> Built:
    """Model, tokenizer, datasets, config and trainer from a parsed recipe (nothing trains yet)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_peft_config

    start = time.perf_counter()
    s, m, args = recipe.script, recipe.model, recipe.training
    spec = recipe.spec
    quantization = _quantization_config(recipe)

    raw = load_datasets(recipe)  # before the tokenizer: a synthetic model trains its tokenizer on these
    extra = {}
    if getattr(args, "u2a", False):  # U2A's weights on GA/GradDiff/NPO (alignkit.trainers.u2a)
        extra["u2a_validation"] = load_source(args.u2a_validation_dataset, None, args.u2a_validation_split)
    model_path = m.model_name_or_path
    if model_path.startswith("synthetic:"):
        corpus = [t for rows in [*raw.values(), *extra.values()] for t in dataset_texts(rows)]
        model_path = str(build_synthetic_model(model_path, corpus))
    else:
        check_pretrained_source(model_path)
    if s.tokenizer_name_or_path:
        check_pretrained_source(s.tokenizer_name_or_path, what="tokenizer", flag="tokenizer_name_or_path")
    else:
        check_pretrained_source(model_path, what="tokenizer")
    if s.ref_model_name_or_path:
        check_pretrained_source(s.ref_model_name_or_path, flag="ref_model_name_or_path")
    tokenizer = _from_hub(
        AutoTokenizer.from_pretrained,
        s.tokenizer_name_or_path or model_path,
        "tokenizer_name_or_path" if s.tokenizer_name_or_path else "model_name_or_path",
        revision=m.model_revision if not s.tokenizer_name_or_path else None,
        trust_remote_code=args.trust_remote_code,
    )
    notes = []
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RecipeError(f"The tokenizer of {model_path} has neither a pad nor an EOS token; set one.")
        tokenizer.pad_token = tokenizer.eos_token  # as TRL does
        notes.append("pad_token := eos_token (the tokenizer has none)")
    if s.text_chunk_tokens:
        raw = {role: chunk_text_rows(rows, tokenizer, s.text_chunk_tokens) for role, rows in raw.items()}

    init_kwargs = {"revision": m.model_revision, "dtype": m.dtype}
    if m.attn_implementation:
        init_kwargs["attn_implementation"] = m.attn_implementation
    init_kwargs.update(args.model_init_kwargs or {})
    # The trainer reloads the reference with these kwargs when it must (ZeRO-3), so record them there.
    args.model_init_kwargs = {k: v for k, v in init_kwargs.items() if v is not None}
    load_kwargs = dict(args.model_init_kwargs)
    if quantization is not None:
        from accelerate import PartialState

        load_kwargs["quantization_config"] = quantization
        load_kwargs["device_map"] = {"": PartialState().local_process_index}
    model = _from_hub(
        AutoModelForCausalLM.from_pretrained,
        model_path,
        "model_name_or_path",
        trust_remote_code=args.trust_remote_code,
        **load_kwargs,
    )
    peft_config = get_peft_config(m)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(args.gradient_checkpointing)
        )

    trainer_cls = spec.trainer_cls
    if extra:
        from alignkit.trainers.u2a import with_u2a

        trainer_cls = with_u2a(trainer_cls)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=raw["train"],
        retain_dataset=raw.get("retain"),
        eval_dataset=raw.get("eval"),
        processing_class=tokenizer,
        ref_model=s.ref_model_name_or_path,
        peft_config=peft_config,
        callbacks=callbacks,
        **extra,
    )
    if (
        s.lm_eval_tasks
    ):  # lm-evaluation-harness every lm_eval_steps steps (optional extra, imported here only)
        from transformers.integrations import is_deepspeed_zero3_enabled

        from alignkit.eval.lm_harness import LmEvalCallback

        if trainer.is_fsdp_enabled or is_deepspeed_zero3_enabled():
            raise RecipeError(
                "`lm_eval_tasks` evaluates the whole model on rank 0, and ZeRO-3/FSDP shard the weights; "
                "launch with DDP or ZeRO-1/2, or evaluate the saved model with `alignkit eval lm-eval`."
            )
        trainer.add_callback(
            LmEvalCallback(
                trainer,
                tasks=s.lm_eval_tasks,
                every_n_steps=s.lm_eval_steps,
                limit=s.lm_eval_limit,
                include_path=s.lm_eval_include_path,
            ).hook
        )
    for c in trainer.constraints.constraints:  # `aux_dataset: SOURCE` in a recipe: the same source forms
        if isinstance(c.aux_dataset, str):
            trainer.constraints.set_aux_rows(c, load_source(c.aux_dataset), trainer)
    info = {}
    for role, rows in raw.items():
        skipped = getattr(trainer, "rows_skipped", {}).get(f"{role}_dataset", 0)
        info[role] = {
            "source": getattr(s, f"{role}_dataset"),
            "config": getattr(s, f"{role}_dataset_config"),
            "split": getattr(s, f"{role}_dataset_split"),
            "rows": len(rows) - skipped,  # the rows that train (after on_invalid="skip")
        }
        if skipped:
            info[role]["rows_skipped"] = skipped
        files = local_files(info[role]["source"])
        if files and files != info[role]["source"]:
            info[role]["files"] = (
                files  # a generated benchmark's folder: `alignkit eval tofu --data` reads it
            )
    return Built(
        trainer,
        model_path,
        m.model_name_or_path,
        info,
        tokenizer,
        time.perf_counter() - start,
        "4bit" if m.load_in_4bit else "8bit" if m.load_in_8bit else None,
        notes,
    )


# --------------------------------------------------------------------------------------- run_info


def run_info(recipe: Recipe, built: Built, train_metrics: dict | None = None) -> dict[str, Any]:
    """What ``alignkit push`` builds the model card from (``run_info.json`` in the output dir)."""
    trainer, m = built.trainer, recipe.model
    spec = recipe.spec
    args = trainer.args
    peft = None
    if m.use_peft:
        peft = {
            "r": m.lora_r,
            "lora_alpha": m.lora_alpha,
            "lora_dropout": m.lora_dropout,
            "target_modules": m.lora_target_modules,
            "use_rslora": m.use_rslora,
            "use_dora": m.use_dora,
        }
    info = {
        "alignkit_version": __version__,
        "method": spec.name,
        "method_summary": spec.summary,
        "trainer": type(trainer).__name__,
        "paper": dict(type(trainer).paper or {}),
        "base_model": built.base_model,
        "base_model_path": built.model_path,
        "tokenizer": recipe.script.tokenizer_name_or_path or built.base_model,
        "model_kind": "lora" if m.use_peft else "full",
        "quantization": built.quantization,
        "dtype": m.dtype,
        "peft": peft,
        "reference": {"mode": trainer.ref_mode, "model": recipe.script.ref_model_name_or_path},
        "lm_head": getattr(trainer, "lm_head_path", None),  # which LM head path ran (fused_lm_head)
        "datasets": built.datasets,
        "hyperparameters": hyperparameters(args),
        "prompt_format": prompt_format(trainer),
        "derived": derived_numbers(trainer),
        "distributed": str(trainer.accelerator.distributed_type).split(".")[-1],
        "recipe": str(recipe.path) if recipe.path else None,
        "train": train_metrics or {},
    }
    return info


def last_logged(trainer) -> dict[str, float]:
    """The last training log entry (method metrics included), without eval entries."""
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry and not any(k.startswith("eval_") for k in entry):
            return {k: v for k, v in entry.items() if isinstance(v, int | float)}
    return {}


def resume_value(value: str | None, output_dir: str | None = None):
    """``--resume_from_checkpoint true|last``: the newest checkpoint in output_dir; or a folder; or None."""
    if not resumes(value):
        return None
    if str(value).lower() in ("true", "last", "latest", "1", "yes"):
        from alignkit.trainers.checkpoints import newest_complete

        found = newest_complete(output_dir)[0] if output_dir and Path(output_dir).is_dir() else None
        if found is None:
            raise RecipeError(
                f"`resume_from_checkpoint: {value}`: {output_dir} holds no complete checkpoint-* folder to "
                "resume from (save_strategy 'no' saves none); give a checkpoint folder, or drop the flag to start over."
            )
        return True  # the trainer picks the same newest complete checkpoint and logs which
    if not Path(value).is_dir():
        raise RecipeError(f"`resume_from_checkpoint`: {value} is not a checkpoint folder (or use `true`).")
    return value


def check_output_dir(recipe: Recipe, resume) -> None:
    """Refuse to train over an earlier run unless the recipe resumes it or says to replace it."""
    out = Path(recipe.training.output_dir)
    if resume or recipe.script.overwrite_output_dir or not out.is_dir() or not any(out.iterdir()):
        return
    held = ", ".join(sorted(p.name for p in out.iterdir())[:3])
    raise RecipeError(
        f"output_dir {out} already holds files ({held}, ...); pass --overwrite_output_dir true to replace "
        "that run, --resume_from_checkpoint true to continue it, or another --output_dir."
    )


def check_build_locks() -> None:
    """Refuse a DeepSpeed launch that a stale torch-extension build lock would hang (see build_locks)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return
    from alignkit.launch.build_locks import age, stale_build_locks

    locks = stale_build_locks()
    if locks:
        files = " ".join(str(p) for p in locks)
        raise RecipeError(
            f"{locks[0]} is a lock left {age(locks[0])} ago by an interrupted build of a torch extension "
            f"({len(locks)} such lock(s)); DeepSpeed would wait for it forever without a word. If no build "
            f"is running, delete them (rm {files}) and run again."
        )


# What a resume may change: how long it trains, precision and memory settings. Everything else
# recorded (the method, what the restored optimizer/scheduler hold) must match the run it continues.
RESUME_MAY_CHANGE = (
    "num_train_epochs",
    "max_steps",
    "seed",
    "bf16",
    "fp16",
    "activation_checkpointing",
    "gradient_checkpointing",
)
RESUME_KEYS = tuple(k for k in TRAINING_KEYS if k not in RESUME_MAY_CHANGE)


def check_resume_settings(recipe: Recipe) -> None:
    """Refuse a resume whose method or optimizer settings differ from the run's own run_info.json.

    The restored scheduler keeps the old rate while the plan and run_info would show the new one
    (wrong provenance); ``--resume_with_changed_settings true`` continues anyway.
    """
    path = Path(recipe.training.output_dir) / RUN_INFO
    if recipe.script.resume_with_changed_settings or not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not a run_info alignkit can read: nothing to compare with
    old = {"method": before.get("method"), **(before.get("hyperparameters") or {})}
    new = {"method": recipe.method, **{k: plain(getattr(recipe.training, k, None)) for k in RESUME_KEYS}}
    changed = [f"{k} {old[k]!r} -> {new[k]!r}" for k in new if k in old and old[k] != new[k]]
    if changed:
        raise RecipeError(
            f"resume would change {', '.join(changed)} of the run in {path.parent} (the restored optimizer "
            "and scheduler keep the old state, and run_info.json would record the new values). Resume with "
            "the run's settings, or pass --resume_with_changed_settings true to continue with the new ones."
        )


def save_run(recipe: Recipe, built: Built, train_metrics: dict) -> dict:
    """Model + tokenizer (every process calls this; Trainer saves on the main one), recipe, run_info."""
    trainer = built.trainer
    out = Path(trainer.args.output_dir)
    trainer.save_model(str(out))
    info = run_info(recipe, built, train_metrics)
    if trainer.args.should_save:  # global rank 0, or each node's local rank 0 (save_on_each_node)
        out.mkdir(parents=True, exist_ok=True)
        built.tokenizer.save_pretrained(str(out))
        header = (
            f"Resolved recipe of the run in {out}: "
            f"{recipe.path if recipe.path else 'recipe'} plus the command-line overrides.\n"
            f"Re-run it with: alignkit train {out / RESOLVED_RECIPE} --output_dir {out}-rerun"
        )
        (out / RESOLVED_RECIPE).write_text(recipe.to_yaml(header), encoding="utf-8")
        write_json(out / RUN_INFO, info, recipe)
    return info


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def write_json(path: Path, data: dict, recipe: Recipe | None = None) -> None:
    """Strict JSON (a NaN/inf number becomes null: bare NaN is not JSON) with every secret redacted."""
    from alignkit.redact import redact, secret_values

    secrets = secret_values(recipe.settings) if recipe is not None else []
    clean = _finite_or_none(json.loads(json.dumps(data, default=str)))
    path.write_text(json.dumps(redact(clean, secrets), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_run_info_early(recipe: Recipe, built: Built) -> None:
    """run_info.json before training, so ``Trainer.push_to_hub`` checkpoints get the same card."""
    trainer = built.trainer
    if trainer.args.should_save:
        out = Path(trainer.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / RUN_INFO, run_info(recipe, built), recipe)


def run_recipe(recipe: Recipe, *, callbacks=None, console=None, end: bool = True) -> dict:
    """Build, train, save; returns run_info (with the training metrics).

    ``end=False`` keeps the process group of a multi-process launch (a sequence's next request needs it).
    """
    resume = resume_value(recipe.training.resume_from_checkpoint, recipe.training.output_dir)
    if _is_main():
        check_output_dir(recipe, resume)
        check_build_locks()
    if resume:
        check_resume_settings(recipe)

    try:
        built = build(recipe, callbacks=callbacks)
    except ValueError as err:  # a trainer refusing an impossible combination (names the field and the fix)
        if isinstance(err, RecipeError):
            raise
        raise RecipeError(f"{recipe.path or 'recipe'}: {err}") from err
    trainer = built.trainer
    show = console is not None and trainer.is_world_process_zero()
    if show:
        summary.print_plan(console, recipe, built)
    write_run_info_early(recipe, built)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(result.metrics)
    # The checkpoint this run continued: the one the trainer chose (on several nodes, the newest complete
    # on every node), before training added newer ones.
    resumed_from = Path(trainer.resumed_from) if trainer.resumed_from else None
    if resumed_from is not None:
        metrics["resumed_from"] = str(resumed_from)
        metrics["resumed_at_step"] = int(resumed_from.name.rpartition("-")[2] or 0)
        metrics["train_loss"] = trainer.loss_log.whole_run_loss()  # Trainer's covers the resumed steps only
        if recipe.script.resume_with_changed_settings:
            metrics["resumed_with_changed_settings"] = True
    metrics["global_step"] = trainer.state.global_step
    metrics["wall_seconds"] = round(time.perf_counter() - start, 3)
    metrics["last_log"] = last_logged(trainer)
    metrics["loss_curve"] = [
        [e["step"], e["loss"]] for e in trainer.state.log_history if "loss" in e and "step" in e
    ]
    lm_eval = [e for e in trainer.state.log_history if any(k.startswith("lm_eval/") for k in e)]
    if lm_eval:  # `lm_eval_tasks`: the curve, in run_info.json beside the loss curve
        metrics["lm_eval"] = [
            {k: v for k, v in e.items() if k.startswith("lm_eval/") or k == "step"} for e in lm_eval
        ]
    info = save_run(recipe, built, metrics)
    if show:
        summary.print_result(console, recipe, built, info)
    trainer.accelerator.wait_for_everyone()  # no rank tears the group down while another still saves
    if end and hasattr(trainer, "end"):
        trainer.end()  # transformers >= 5.18: closes trackers and the process group
    return info
