"""``alignkit eval robustness``: does forgotten knowledge come back after relearning or quantization?"""

from __future__ import annotations

import argparse
from pathlib import Path

from alignkit.commands.startup import model_stack_imports

DESCRIPTION = """\
Attack an unlearned model on TOFU and measure how much of the forgotten knowledge comes back
(shared/design/methods-unlearning-2.md sections 9 and 10).

  relearn    fine-tune the unlearned model (and, as a control, the retain model) for --attack-steps
             steps on --attack-k forget rows per author (or on your own rows, --attack-data), then
             evaluate on the OTHER forget rows
  quantize   weight-only int8 / int4 post-training quantization of the decoder blocks' linear layers
             (torchao by default, CPU; --quantizers rtn_int8 rtn_int4 needs nothing extra)

recovery = (M_attacked - M_unlearned) / (M_target - M_unlearned) on forget Prob and ROUGE-L: 0 means
nothing came back, 1 means back to the target model. Prints a table (with FQ and Model Utility of
every model) and writes ROBUSTNESS.json into --output-dir, next to the TOFU logs of the model, where
`alignkit report` and the model card of `alignkit push` read it.
"""


def add_robustness_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "robustness",
        help="Relearning attack and quantization recovery of an unlearned model (TOFU).",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="The unlearned model (a local folder).")
    p.add_argument("--target-model", required=True, help="The model before unlearning.")
    p.add_argument(
        "--retain-model", required=True, help="The retain (oracle) model: FQ reference and control."
    )
    p.add_argument("--data", required=True, help="A local folder with the TOFU <config>.json files.")
    p.add_argument(
        "--forget-split", default="forget10", help="forget01, forget05 or forget10 (default forget10)."
    )
    p.add_argument(
        "--attacks",
        nargs="+",
        default=["relearn", "quantize"],
        choices=("relearn", "quantize"),
        help="Which attacks.",
    )
    p.add_argument(
        "--attack-k", type=int, default=2, help="Forget rows per author the attacker holds (default 2)."
    )
    p.add_argument(
        "--attack-steps", type=int, default=10, help="Fine-tuning steps of the attack (default 10)."
    )
    p.add_argument(
        "--attack-lr", type=float, default=1e-5, help="Attack learning rate (default 1e-5, TOFU's)."
    )
    p.add_argument("--attack-batch-size", type=int, default=8, help="Attack batch size (default 8).")
    p.add_argument("--attack-seed", type=int, default=0, help="Seed of the attack rows and data order.")
    p.add_argument(
        "--attack-data",
        help="Your own attack rows instead of forget rows (JSON/JSONL: question/answer or text); then every "
        "forget row is evaluated.",
    )
    p.add_argument(
        "--rows-per-author",
        type=int,
        help="Forget rows per author (default: 20 as in TOFU, or what a generated set's SOURCE.md says: 10).",
    )
    p.add_argument(
        "--quantizers",
        nargs="+",
        default=["torchao_int8", "torchao_int4"],
        help="Quantizers: torchao_int8, torchao_int4 (default; pip install 'alignkit[robustness]'), or the "
        "plain-torch reference rtn_int8, rtn_int4, rtn_int4_sym.",
    )
    p.add_argument(
        "--group-size", type=int, default=128, help="int4 group size along the input (default 128)."
    )
    p.add_argument("--batch-size", type=int, default=16, help="Eval batch size (default 16).")
    p.add_argument("--max-examples", type=int, help="Keep the first N rows of every eval file (quick runs).")
    p.add_argument("--output-dir", help="Where ROBUSTNESS.json goes (default <model>/eval/robustness).")
    p.add_argument("--cpu", action="store_true", help="Run on CPU even when a GPU is there.")
    p.set_defaults(func=run_robustness)


def print_robustness_table(result, console) -> None:
    from alignkit.eval.robustness import TABLE_HEADER
    from alignkit.formatting import print_table

    s = result.settings
    title = (
        f"Robustness on {s['forget_split']}: {s['eval_rows']} held-out forget rows "
        f"(attack: {s['attack_source']}, {s['relearn']['steps']} steps)"
    )
    print_table(console, title, TABLE_HEADER, result.table())
    console.print("recovery: share of the target-unlearned gap in forget Prob that came back (0 none, 1 all)")


def rows_per_author(args) -> int:
    """--rows-per-author, else the generated benchmark's questions per person, else TOFU's 20."""
    from alignkit.data.synthetic.tofu import generated_questions_per_person
    from alignkit.eval.robustness import AUTHOR_ROWS

    return args.rows_per_author or generated_questions_per_person(args.data) or AUTHOR_ROWS


def run_robustness(args) -> int:
    from rich.console import Console

    from alignkit.commands.eval_args import check_eval_args

    check_eval_args(args)
    with model_stack_imports():
        from alignkit.eval.robustness import RelearnSettings, evaluate_robustness

    console = Console(stderr=True)
    out = Path(args.output_dir) if args.output_dir else Path(args.model) / "eval" / "robustness"
    try:
        if "quantize" in args.attacks and any(q.startswith("torchao") for q in args.quantizers):
            from alignkit.eval.quantization import torchao_quantization

            torchao_quantization()  # without torchao: one line naming the extra, before any model loads
        attack_rows = None
        if args.attack_data:
            from alignkit.data import load_rows

            attack_rows = load_rows(args.attack_data).to_list()
        result = evaluate_robustness(
            {Path(args.model).name: args.model},
            target=args.target_model,
            retain=args.retain_model,
            data=args.data,
            forget_split=args.forget_split,
            attacks=tuple(args.attacks),
            relearn_settings=RelearnSettings(
                steps=args.attack_steps,
                learning_rate=args.attack_lr,
                batch_size=args.attack_batch_size,
                k=args.attack_k,
                seed=args.attack_seed,
                rows_per_author=rows_per_author(args),
            ),
            attack_rows=attack_rows,
            quantizers=tuple(args.quantizers),
            group_size=args.group_size,
            batch_size=args.batch_size,
            max_examples=args.max_examples,
            use_cpu=args.cpu,
            on_step=lambda msg: console.print(f"[dim]{msg}[/]"),
        )
    except (ValueError, FileNotFoundError, ImportError) as err:
        from rich.markup import escape

        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        return 2
    print_robustness_table(result, console)
    path = result.save(out)
    console.print(f"log written to {path}")
    return 0
