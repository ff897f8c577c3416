"""Readable summaries of a run with rich: the plan before training, the result after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from alignkit.formatting import format_number
from alignkit.launch.recipe import Recipe
from alignkit.trainers.run_info import derived_numbers


def _fmt(value: Any) -> str:
    return format_number(value, spec=".4g", small=None, missing="None")


def _datasets_lines(datasets: dict[str, dict]) -> str:
    lines = []
    for role, d in datasets.items():
        where = d["source"] + (f" [{d['config']}]" if d.get("config") else "")
        lines.append(f"{role}: {where} ({d['rows']} rows)")
    return "\n".join(lines)


def print_plan(console: Console, recipe: Recipe, built) -> None:
    """Everything that decides the run, with the derived numbers (global batch, steps)."""
    trainer, m, args = built.trainer, recipe.model, built.trainer.args
    spec = recipe.spec
    d = derived_numbers(trainer)
    table = Table(
        title=f"alignkit train · {recipe.path or spec.name}", show_header=False, title_justify="left"
    )
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    paper = (type(trainer).paper or {}).get("id")
    table.add_row("method", f"{spec.name}: {spec.summary}" + (f" (arXiv {paper})" if paper else ""))
    model = (
        built.base_model
        if built.base_model == built.model_path
        else f"{built.base_model}\n→ {built.model_path}"
    )
    table.add_row("model", model)
    kind = f"LoRA r={m.lora_r} α={m.lora_alpha}" if m.use_peft else "full fine-tuning"
    if built.quantization:
        kind += f", {built.quantization} (QLoRA)"
    table.add_row("training", f"{kind}, dtype {m.dtype}")
    table.add_row("reference", trainer.ref_mode)
    table.add_row("data", _datasets_lines(built.datasets))
    table.add_row(
        "batch",
        f"{args.per_device_train_batch_size} per device × {args.gradient_accumulation_steps} accumulation × "
        f"{d['world_size']} process(es) = {d['global_batch_size']} rows per step",
    )
    epochs = (
        f"{_fmt(args.num_train_epochs)} epoch(s)" if not args.max_steps or args.max_steps < 0 else "max_steps"
    )
    table.add_row("steps", f"{d['total_steps']} ({epochs}; {d['steps_per_epoch']} per epoch)")
    table.add_row("optimizer", f"lr {_fmt(args.learning_rate)}, {_plain(args.lr_scheduler_type)} schedule")
    kind = _plain(trainer.accelerator.distributed_type)
    table.add_row("device", f"{args.device} · {'single process' if kind == 'NO' else kind}")
    table.add_row("output", str(args.output_dir))
    for note in recipe.notes + built.notes:
        table.add_row("auto", note)
    console.print(table)


def _plain(value) -> str:
    return str(getattr(value, "value", value)).split(".")[-1]


def print_result(console: Console, recipe: Recipe, built, info: dict) -> None:
    """Final loss, time, the method's last logged metrics, what was saved and what to run next."""
    train = info.get("train", {})
    table = Table(title="alignkit train · done", show_header=False, title_justify="left")
    table.add_column(style="bold green", no_wrap=True)
    table.add_column()
    table.add_row("steps", str(train.get("global_step")))
    if "train_loss" in train:
        table.add_row("train loss (mean)", _fmt(train["train_loss"]))
    table.add_row(
        "time", f"{train.get('wall_seconds', 0):.1f} s training, {built.setup_seconds:.1f} s set-up"
    )
    last = {k: v for k, v in train.get("last_log", {}).items() if k not in ("epoch", "step")}
    if last:
        table.add_row("last log", "\n".join(f"{k} = {_fmt(v)}" for k, v in sorted(last.items())))
    out = built.trainer.args.output_dir
    kind = "LoRA adapter" if info.get("model_kind") == "lora" else "model"
    table.add_row("saved", f"{out}: {kind} + tokenizer, alignkit_recipe.yaml, run_info.json")
    train = recipe.script.train_dataset or ""
    if "tofu" in train.lower():
        evaluate = tofu_eval_command(train, built.datasets.get("train", {}), out)
    elif "muse" in train.lower():
        evaluate = f"alignkit eval muse --help  (evaluate {out})"
    else:
        evaluate = f"alignkit eval --help  (evaluate {out})"
    console.print(table)
    # Outside the table and unwrapped, so each command is one line to copy.
    console.print("[bold green]next[/]", markup=True)
    console.print(f"  {evaluate}", soft_wrap=True, markup=False, highlight=False)
    console.print(
        f"  alignkit push {out} --repo-id USER/NAME --dry-run {out}-upload", soft_wrap=True, markup=False
    )


def tofu_eval_command(source: str, train: dict, out: str) -> str:
    """``alignkit eval tofu`` for a run that trained on a TOFU forget split, naming the split and the data.

    The data is where the training rows came from (a generated benchmark's folder, a local folder of
    the TOFU files, or the Hub id), so the command runs offline whenever training did.
    """
    import re

    from alignkit.launch.sources import parse_source

    parsed = parse_source(source)
    data = train.get("files") or source
    split = train.get("config") or (parsed.params.get("split") if parsed.kind == "synthetic" else None)
    if parsed.kind == "local" and Path(parsed.name).is_file():  # e.g. /data/tofu/forget01.json
        data, split = str(Path(parsed.name).parent), split or Path(parsed.name).stem
    parts = [f"alignkit eval tofu --model {out}"]
    if split and re.fullmatch(r"forget\d\d", str(split)):
        parts.append(f"--forget-split {split}")
    parts += [f"--data {data}", f"--output-dir {out}/eval/tofu"]
    return " ".join(parts)
