"""``alignkit train [RECIPE.yaml] [--key value ...]``: run a recipe, optionally under ``accelerate launch``.

The recipe file is optional: ``alignkit train --method npo --model_name_or_path X --train_dataset Y``
is a recipe given entirely as flags (as TrlParser users expect).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

from alignkit.commands.startup import model_stack_imports

DESCRIPTION = """\
Train with a recipe: a flat YAML naming the method, the model, the datasets, the reference mode,
LoRA/quantization and any training argument. Every key can be overridden on the command line
(`--learning_rate 1e-5 --max_steps 10`); unknown or misspelled keys are errors. Without a file the
whole recipe is given as flags (`--method` is then required).

Writes to output_dir: the model (or LoRA adapter) + tokenizer, the resolved recipe
(alignkit_recipe.yaml, which re-runs the same configuration) and run_info.json (what
`alignkit push` builds the model card from). Resume a killed run with
`--resume_from_checkpoint true` (the newest checkpoint in output_dir) or a checkpoint folder.
"""

EPILOG = """\
examples:
  alignkit train recipes/generated_tofu/finetune_full.yaml
  alignkit train recipes/tofu/npo/forget10_lora.yaml --learning_rate 5e-5 --output_dir runs/try1
  alignkit train --method npo --model_name_or_path PATH --train_dataset locuslab/TOFU \
      --train_dataset_config forget10 --output_dir runs/npo      # no recipe file: flags only
  alignkit train RECIPE.yaml --accelerate_config zero3 --num_processes 8
  accelerate launch --config_file accelerate_configs/zero3.yaml -m alignkit.cli train RECIPE.yaml
  alignkit train --method npo --help        # every key an npo recipe accepts, with its help
  alignkit train recipes/generated_tofu/npo_sustainability.yaml   # 4 requests in a row, evaluated after each

methods: {methods}
recipes: recipes/<benchmark>/... (README: "Recipes"); launch configs: accelerate_configs/*.yaml
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="Train with a recipe (YAML + --key value overrides).",
        description=DESCRIPTION,
        epilog=EPILOG,  # method names filled in when shown (importing them costs seconds)
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
        usage="alignkit train [RECIPE.yaml] [--method NAME] [--key value ...]",
    )
    # No argparse positional for the recipe: with unknown `--key value` flags before it, argparse would
    # take the first flag's value for the recipe. `run` reads it from the leftover arguments instead.
    parser.add_argument(
        "-h",
        "--help",
        action="store_true",
        help="show this help; with a recipe or --method NAME, list every key that method's recipes accept",
    )
    parser.add_argument(
        "--method",
        metavar="NAME",
        help="the method (overrides the recipe's `method:`); with --help, list every key its recipes accept",
    )
    launch = parser.add_argument_group(
        "multi-process launch (optional; equivalent to `accelerate launch --config_file ... -m alignkit.cli train`)"
    )
    launch.add_argument(
        "--accelerate_config",
        metavar="NAME|PATH",
        help="an accelerate config: a file, or a name from accelerate_configs/ (multi_gpu, zero2, zero3, "
        "zero3_offload, fsdp2, multi_cpu, single_gpu)",
    )
    launch.add_argument("--num_processes", type=int, help="processes to launch (overrides the config file)")
    launch.add_argument(
        "--mixed_precision", choices=("no", "fp16", "bf16"), help="overrides the config file (`no` on CPU)"
    )
    launch.add_argument(
        "--main_process_port",
        type=int,
        help="rendezvous port (default: a free one; on several machines the config's, the same on every node)",
    )
    launch.add_argument(
        "--num_machines", type=int, help="machines (nodes) in the launch; run the same command on each"
    )
    launch.add_argument("--machine_rank", type=int, help="this machine's rank, 0 .. num_machines-1")
    launch.add_argument(
        "--main_process_ip", metavar="HOST", help="machine rank 0's address, reachable from every node"
    )
    parser.set_defaults(func=run, accepts_extra=True, _parser=parser)
    return parser


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _error(message: str) -> int:
    from rich.console import Console

    if int(os.environ.get("RANK", "0")) == 0:  # under a launch every rank meets the same mistake
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]error:[/] {message}", markup=True
        )
    return 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_accelerate_config(value: str) -> Path:
    """A path, or a shipped config name (``zero3`` → ``accelerate_configs/zero3.yaml``)."""
    candidates = [Path(value)]
    if not value.endswith((".yaml", ".yml")):
        name = f"{value}.yaml"
        candidates += [
            Path("accelerate_configs") / name,
            Path(__file__).resolve().parents[2] / "accelerate_configs" / name,
        ]
    for path in candidates:
        if path.is_file():
            return path
    shipped = sorted(
        p.stem for p in (Path(__file__).resolve().parents[2] / "accelerate_configs").glob("*.yaml")
    )
    raise FileNotFoundError(
        f"accelerate config {value!r} not found; shipped configs: {', '.join(shipped) or 'none'}."
    )


def launch_command(args, extra: list[str]) -> list[str]:
    config = resolve_accelerate_config(args.accelerate_config)
    cmd = [sys.executable, "-m", "alignkit.launch.accelerate_launch", "--config_file", str(config)]
    if args.num_processes:
        cmd += ["--num_processes", str(args.num_processes)]
    if args.mixed_precision:
        cmd += ["--mixed_precision", args.mixed_precision]
    several = _machines(args, config)
    for flag in ("num_machines", "machine_rank", "main_process_ip"):
        if getattr(args, flag, None) is not None:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    if several > 1 and not (getattr(args, "main_process_ip", None) or _config(config).get("main_process_ip")):
        raise ValueError(
            f"--main_process_ip: a launch on {several} machines needs machine rank 0's address, the same "
            "on every node (e.g. --main_process_ip 10.0.0.1)."
        )
    port = args.main_process_port
    if port is None and several == 1:  # every node must agree on the port: several machines use the config's
        port = free_port()
    if port is not None:
        cmd += ["--main_process_port", str(port)]
    return [*cmd, "-m", "alignkit.cli", "train", *([args.recipe] if args.recipe else []), *extra]


def _config(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _machines(args, config: Path) -> int:
    """How many machines the launch spans: ``--num_machines``, else the config's ``num_machines``."""
    return getattr(args, "num_machines", None) or int(_config(config).get("num_machines", 1))


def show_help(args) -> int:
    """``train --help`` (the methods) or ``train --method NAME --help`` (every key), from the keys that
    ship with alignkit (instant), else from the trainer stack (seconds)."""
    from alignkit.launch import recipe_keys
    from alignkit.launch.recipe_file import read_recipe_file

    method = args.method
    if method is None and args.recipe and Path(args.recipe).is_file():
        method = read_recipe_file(args.recipe).get("method")
    if method is None:
        names = recipe_keys.method_names()
        if names is None:
            from alignkit.trainers import METHODS  # importing the package registers every method

            names = sorted(METHODS)
        args._parser.epilog = EPILOG.format(methods=", ".join(names))
        args._parser.print_help()
        return 0
    text = recipe_keys.method_help(str(method))
    if text is None:
        from alignkit.launch.recipe import recipe_help

        try:
            text = recipe_help(str(method))
        except ValueError as err:
            return _error(str(err))
    print(text)
    return 0


def run(args) -> int:
    extra = list(getattr(args, "extra", []) or [])
    # The recipe file comes first; a first argument that is a flag means a recipe given as flags only.
    args.recipe = extra.pop(0) if extra and not extra[0].startswith("-") else None
    if args.method:
        extra = ["--method", args.method, *extra]
    if args.help:
        return show_help(args)
    if not args.recipe and not args.method:
        return _error(
            "no recipe given: alignkit train RECIPE.yaml [--key value ...], or a recipe as flags: "
            "alignkit train --method NAME --model_name_or_path ... (see alignkit train --help)"
        )
    if args.recipe and not Path(args.recipe).is_file():
        return _error(
            f"recipe {args.recipe!r} is not a file. The recipe comes first, then `--key value` overrides: "
            "alignkit train RECIPE.yaml --learning_rate 1e-5"
        )
    launch_only = [
        f"--{k}"
        for k in (
            "num_processes",
            "mixed_precision",
            "main_process_port",
            "num_machines",
            "machine_rank",
            "main_process_ip",
        )
        if getattr(args, k) is not None
    ]
    for flag in ("num_processes", "main_process_port"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            return _error(f"--{flag} must be at least 1, got {value}.")
    if launch_only and not args.accelerate_config:
        return _error(
            f"{', '.join(launch_only)} only apply to a multi-process launch: add --accelerate_config NAME "
            "(precision of a single process is the recipe's `bf16`/`fp16`)."
        )
    from alignkit.launch import recipe_keys
    from alignkit.launch.recipe_file import RecipeError

    try:
        recipe_keys.precheck(args.recipe, extra)  # no torch yet: mistakes come back in well under 1 s
    except RecipeError as err:
        return _error(str(err))
    from alignkit.launch.recipe import load_recipe

    try:
        recipe = load_recipe(args.recipe, extra, auto=not args.accelerate_config)
    except RecipeError as err:
        return _error(str(err))
    if recipe.script.forget_sequence and not args.accelerate_config:  # several requests (launch.sequence);
        with model_stack_imports():
            from alignkit.launch.sequence import run_sequence  # with --accelerate_config each rank lands here

        try:
            run_sequence(recipe, console=_console())
        except RecipeError as err:
            return _error(str(err))
        return 0
    if args.accelerate_config:
        try:
            cmd = launch_command(args, extra)
        except (FileNotFoundError, ValueError) as err:
            return _error(str(err))
        _console().print(f"[bold]launching:[/] {' '.join(cmd[1:])}", markup=True)
        return subprocess.call(cmd, env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"})

    with model_stack_imports():
        from alignkit.launch.runner import run_recipe

    main = int(os.environ.get("RANK", "0")) == 0
    try:
        run_recipe(recipe, console=_console() if main else None)
    except RecipeError as err:
        return _error(str(err))
    except KeyboardInterrupt:
        raise interrupted(args.recipe, extra, recipe) from None
    return 0


def interrupted(recipe_file: str | None, extra: list[str], recipe):
    """Ctrl-C during a run: one line naming the newest complete checkpoint and the command that resumes."""
    import shlex

    from alignkit.errors import Interrupted
    from alignkit.trainers.checkpoints import newest_complete

    out = recipe.training.output_dir
    newest, _ = newest_complete(out)
    again = shlex.join(["alignkit", "train", *([recipe_file] if recipe_file else []), *extra])
    if newest is None:
        return Interrupted(
            f"interrupted (Ctrl-C) before the first complete checkpoint in {out}; start again with: "
            f"{again} --overwrite_output_dir true"
        )
    resume = "" if "--resume_from_checkpoint" in extra else " --resume_from_checkpoint true"
    return Interrupted(
        f"interrupted (Ctrl-C); the newest complete checkpoint is {newest}. Resume with: {again}{resume}"
    )
