"""``alignkit report``: compare evaluation runs in one table and plot Forget Quality vs Model Utility."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Compare TOFU evaluation runs (folders written by `alignkit eval tofu`, or their TOFU_EVAL.json;
open-unlearning's TOFU_EVAL.json works too). Prints one table with Forget Quality, Model Utility and
every component, and writes into --output:

  tofu_comparison.md    the table, with a note when runs differ in split, protocol or n
  tofu_comparison.json  the summaries
  fq_vs_mu.png          Model Utility (x) vs Forget Quality (y, log scale), as in the TOFU paper

PrivLeak (holdout MIA) and the recoveries of `alignkit eval robustness` (ROBUSTNESS.json in the run
folder or in its sibling robustness/ folder) get columns when a run has them.

Forget Quality is only comparable between runs with the same forget split, protocol and number of
forget items; the table shows them in the split/protocol/n column.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="Compare eval runs in one table and plot Forget Quality vs Model Utility.",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="Run folders (or TOFU_EVAL.json files) to compare."
    )
    p.add_argument(
        "--output", default="runs/report", help="Folder for the table and the plot (default runs/report)."
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from alignkit.eval.report import comparison_rows, write_comparison
    from alignkit.formatting import print_table

    console = Console(stderr=True)
    out = write_comparison(args.run_dirs, args.output)
    # The terminal gets the headline columns; the markdown file has every component.
    header, rows = comparison_rows(out["runs"])
    headline = ("run", "split/protocol/n", "FQ", "MU", "PrivLeak", "relearn R", "int4 R", "RTN int4 R")
    keep = [header.index(h) for h in (*headline, "forget ROUGE", "forget Prob", "forget TR") if h in header]
    print_table(console, "TOFU runs", [header[i] for i in keep], [[r[i] for i in keep] for r in rows], left=2)
    console.print(f"table: {out['markdown']}\nplot:  {out['plot']}")
    return 0


__all__ = ["add_parser", "run"]
