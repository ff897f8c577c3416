"""``alignkit push RUN_DIR --repo-id USER/NAME``: upload a run's model with a generated model card."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Upload the model of a run folder written by `alignkit train` (a full model, a LoRA adapter, or with
--merge the adapter merged into its base model) to the Hugging Face Hub, with a model card built
from the run: base model, method and paper, datasets, hyperparameters, the resolved recipe, and the
evaluation results in the card's model-index metadata.

Evaluation results are read from `alignkit eval` logs found under RUN_DIR (TOFU_SUMMARY.json,
TOFU_EVAL.json, MUSE_SUMMARY.json; write them there with `--output-dir RUN_DIR/eval/tofu`) and from
--results files (a flat {"metric": value} JSON, an eval log, or a folder of them). Report plots
(*.png) under RUN_DIR are uploaded and shown in the card.

Authentication: the token comes from the HF_TOKEN environment variable or `hf auth login`;
alignkit never takes a token argument and never prints one. Nothing is uploaded with --dry-run.
"""

EPILOG = """\
examples:
  alignkit push runs/tofu/npo/forget10_lora --repo-id me/llama-npo-forget10 --dry-run /tmp/upload
  alignkit push runs/tofu/npo/forget10_lora --repo-id me/llama-npo-forget10 --merge --private
  alignkit push runs/x --repo-id me/x --results runs/eval/tofu/x/TOFU_SUMMARY.json
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "push",
        help="Upload a run's model (or LoRA adapter, or merged model) with a model card.",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="output_dir of an `alignkit train` run")
    p.add_argument("--repo-id", required=True, help="Hub repository, USER/NAME (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument(
        "--merge",
        action="store_true",
        help="merge the LoRA adapter into its base model and upload the result",
    )
    p.add_argument(
        "--results",
        action="append",
        default=[],
        metavar="FILE_OR_DIR",
        help="evaluation results to put in the card (repeatable); replaces the logs found under RUN_DIR",
    )
    p.add_argument(
        "--dry-run",
        metavar="DIR",
        help="write exactly the folder that would be uploaded to DIR (must be new or empty) and stop",
    )
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from alignkit import hub
    from alignkit.eval.logs import read_results

    out, err = Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        results = None
        if args.results:
            results = [src for path in args.results for src in read_results(path)]
        report = hub.push_run(
            args.run_dir,
            args.repo_id,
            private=args.private,
            merge=args.merge,
            results=results,
            dry_run=args.dry_run,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        err.print(f"[bold red]error:[/] {hub.scrub(str(e))}")
        return 2
    except Exception as e:  # network, auth, offline mode: report without a traceback (it may echo headers)
        err.print(f"[bold red]upload failed:[/] {type(e).__name__}: {hub.scrub(str(e))}")
        return 1
    if not report["uploaded"]:
        from pathlib import Path

        folder = Path(report["folder"])
        table = Table(
            title=f"alignkit push · dry run for {args.repo_id}", show_header=True, title_justify="left"
        )
        table.add_column("file")
        table.add_column("bytes", justify="right")
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            table.add_row(str(f.relative_to(folder)), f"{f.stat().st_size:,}")
        out.print(table)
        card = hub.ModelCard.load(folder / "README.md")
        n = len(card.data.eval_results or [])
        out.print(
            f"Model card: {folder / 'README.md'} ({n} evaluation result(s) in model-index). Nothing uploaded."
        )
        return 0
    out.print(f"[bold green]uploaded[/] {len(report['files'])} file(s) to {report['url']}")
    return 0
