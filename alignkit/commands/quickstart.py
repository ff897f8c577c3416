"""``alignkit quickstart``: the whole pipeline on the embedded default, offline, on a CPU."""

from __future__ import annotations

import argparse
import time


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="Run the whole pipeline offline on a generated benchmark and a tiny model (CPU, minutes).",
        description="Generates a TOFU-format benchmark of fictitious people, builds a tiny model, fine-tunes a "
        "target (on full) and a retain model (on the retain split), unlearns the forget split with each "
        "method, evaluates every model with the TOFU metrics and prints a comparison table. Writes the "
        "models, evaluation logs, a markdown report and the Forget Quality vs Model Utility plot.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--output-dir", default="runs/quickstart", help="Where everything is written.")
    p.add_argument(
        "--methods", nargs="+", default=None, help="Unlearning methods to compare (registry names)."
    )
    p.add_argument("--num-people", type=int, default=None, help="Fictitious people in the benchmark.")
    p.add_argument("--finetune-epochs", type=float, default=None, help="Epochs to fine-tune target/retain.")
    p.add_argument("--unlearn-epochs", type=float, default=None, help="Epochs of unlearning per method.")
    p.add_argument("--seed", type=int, default=None, help="Seed for data, model and training.")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from alignkit.quickstart import QuickstartSettings, run_quickstart, verdict

    console = Console()
    settings = QuickstartSettings()
    for name in ("num_people", "finetune_epochs", "unlearn_epochs", "seed"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.methods:
        settings.methods = tuple(args.methods)
    start = time.perf_counter()
    step = {"n": 0}

    def on_step(message: str) -> None:
        step["n"] += 1
        console.print(f"[bold cyan][{step['n']}][/] {message}  [dim]({time.perf_counter() - start:.0f}s)[/]")

    result = run_quickstart(args.output_dir, settings, on_step=on_step)
    table = Table(title=f"TOFU-format benchmark, {settings.forget_split}: unlearning on a tiny model")
    for column in ("model", "Forget Quality ↑", "Model Utility ↑", "forget ROUGE-L ↓", "forget prob ↓"):
        table.add_column(column, justify="left" if column == "model" else "right")

    def fmt(value, sci=False):
        if value is None:
            return "—"
        return f"{value:.2e}" if sci else f"{value:.3f}"

    for name, summary in result.rows.items():
        table.add_row(
            name,
            fmt(summary.get("forget_quality"), sci=True),
            fmt(summary.get("model_utility")),
            fmt(summary.get("forget_rouge")),
            fmt(summary.get("forget_prob")),
        )
    console.print(table)
    for line in verdict(result.rows):
        console.print(f"• {line}")
    total = time.perf_counter() - start
    console.print(
        f"\nWrote {result.report['markdown']}, {result.report['plot']} and the models under "
        f"{result.output_dir / 'models'}. Total wall time: {total:.0f}s."
    )
    return 0
