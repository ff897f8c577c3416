"""``alignkit quickstart``: the whole pipeline on the embedded default, offline, on a CPU."""

from __future__ import annotations

import argparse
import time

from alignkit.commands.startup import model_stack_imports


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="Run the whole pipeline offline on a generated benchmark and a tiny model (CPU, minutes).",
        description="Unlearning half: generates a TOFU-format benchmark of fictitious people, builds a tiny "
        "model, fine-tunes a target (on full) and a retain model (on the retain split), unlearns the forget "
        "split with each method and evaluates every model with the TOFU metrics. Alignment half: SFT on "
        "format demonstrations of synthetic preference tasks, then DPO vs S-DPO (recommendation) and DPO vs "
        "LiPO-λ (graded lists) at the same budget and seed, and SFT vs D2O (negatives-only safety), each "
        "scored on the exact score of greedy answers to held-out prompts, the well-formed share and the "
        "likelihood metrics (HitRatio@1, NDCG, ranking accuracy). Prints the tables "
        "and a verdict; writes the models, evaluation logs, markdown reports and plots.",
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
    p.add_argument(
        "--part",
        choices=("both", "unlearning", "alignment"),
        default="both",
        help="Run one half: unlearning (TOFU-format benchmark) or alignment (DPO vs S-DPO, DPO vs LiPO-λ, "
        "SFT vs D2O on the synthetic preference tasks).",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    with model_stack_imports():
        from alignkit.quickstart import QuickstartSettings, run_quickstart

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

    result = run_quickstart(args.output_dir, settings, on_step=on_step, part=args.part)
    if result.rows:
        _print_unlearning(console, settings, result)
    if result.alignment:
        _print_alignment(console, result)
    total = time.perf_counter() - start
    reports = [result.report, result.report.get("alignment", {})]
    written = [str(r[key]) for r in reports for key in ("markdown", "plot") if r.get(key)]
    console.print(
        f"\nWrote {', '.join(written)} and the models under {result.output_dir}. Total wall time: {total:.0f}s."
    )
    return 0


def _fmt(value, sci=False):
    if value is None:
        return "—"
    return f"{value:.2e}" if sci else f"{value:.3f}"


def _print_unlearning(console, settings, result) -> None:
    from rich.table import Table

    from alignkit.quickstart import verdict

    table = Table(title=f"TOFU-format benchmark, {settings.forget_split}: unlearning on a tiny model")
    for column in ("model", "Forget Quality ↑", "Model Utility ↑", "forget ROUGE-L ↓", "forget prob ↓"):
        table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
    for name, summary in result.rows.items():
        table.add_row(
            name,
            _fmt(summary.get("forget_quality"), sci=True),
            _fmt(summary.get("model_utility")),
            _fmt(summary.get("forget_rouge")),
            _fmt(summary.get("forget_prob")),
        )
    console.print(table)
    for line in verdict(result.rows):
        console.print(f"• {line}")


def _print_alignment(console, result) -> None:
    from rich.table import Table

    from alignkit.quickstart_alignment import alignment_table, alignment_verdict

    rows = alignment_table(result.alignment)
    for task in result.alignment:
        table = Table(title=f"Synthetic {task} task: alignment on a tiny model (held-out prompts)")
        table.add_column(
            "model", overflow="fold"
        )  # fold, never cut: a narrow terminal keeps every name whole
        values = [(model, vals) for t, model, vals in rows if t == task]
        for header, _ in values[0][1] if values else []:
            table.add_column(header, justify="right", overflow="fold")
        for model, vals in values:
            table.add_row(model, *(_fmt(v) for _, v in vals))
        console.print(table)
    for line in alignment_verdict(result.alignment):
        console.print(f"• {line}")
