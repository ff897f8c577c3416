"""The quickstart pipeline on the REAL TOFU data, with a tiny model trained from scratch.

    python scripts/tofu_tiny.py                       # ../shared/data/tofu, CPU settings (< 1 hour)
    python scripts/tofu_tiny.py --data /path/to/TOFU  # a local copy of locuslab/TOFU
    python scripts/tofu_tiny.py --gpu                 # larger model and budgets when a GPU is there
    python scripts/tofu_tiny.py --reduced --robustness --methods ga npo rmu ...
                                                      # smaller budget; + relearning / quantization attacks

A tiny Llama is trained from scratch on `full` (target) and `retain90` (retain oracle); each
unlearning method then runs on `forget10` and every model gets the full TOFU evaluation against
the oracle. Writes the comparison table, the FQ-vs-MU plot and every log under --output-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402

from alignkit.quickstart import QuickstartSettings, run_quickstart, verdict  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def settings_for(gpu: bool, seed: int) -> QuickstartSettings:
    if gpu:
        return QuickstartSettings(
            forget_split="forget10",
            seed=seed,
            vocab_size=4096,
            hidden_size=512,
            num_layers=8,
            finetune_epochs=10,
            finetune_lr=1e-3,
            finetune_batch_size=32,
            unlearn_epochs=5,
            unlearn_lr=2e-4,
            unlearn_batch_size=16,
            eval_batch_size=64,
        )
    # CPU: sized so the whole run (2 fine-tunes of 4,217 QA pairs, 5 unlearning runs, 7 full
    # evaluations) finishes within an hour on 2 shared cores.
    return QuickstartSettings(
        forget_split="forget10",
        seed=seed,
        vocab_size=1024,
        hidden_size=128,
        num_layers=3,
        finetune_epochs=12,
        finetune_lr=5e-3,
        finetune_batch_size=32,
        unlearn_epochs=3,
        unlearn_lr=5e-4,
        unlearn_batch_size=16,
        eval_batch_size=64,
    )


# Every unlearning method of the registry (variants left out); RMU steers the middle block of the tiny model.
ALL_METHODS = (
    "ga",
    "graddiff",
    "npo",
    "npo_rt",
    "simnpo",
    "idk_dpo",
    "dipo",
    "catnip",
    "rmu",
    "undial",
    "wga",
    "satimp",
    "ceu",
)
TINY_OVERRIDES = {"rmu": {"layer": 1}}


def reduce_budget(s: QuickstartSettings) -> QuickstartSettings:
    """A CPU budget that fits a shared machine: a 2-block hidden-64 model, 5 fine-tuning epochs,
    2 unlearning epochs, the first 100 rows of every eval file (FQ then compares 100 forget items)."""
    s.hidden_size, s.num_layers = 64, 2
    s.finetune_epochs, s.unlearn_epochs = 5, 2
    s.max_eval_examples = 100
    return s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=str(REPO_ROOT.parent / "shared" / "data" / "tofu"),
        help="Local folder with the TOFU json files.",
    )
    parser.add_argument("--output-dir", default="runs/tofu_tiny")
    parser.add_argument("--gpu", action="store_true", help="Use the larger GPU settings.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=None, help="'all' for every unlearning method.")
    parser.add_argument("--reduced", action="store_true", help="The reduced CPU budget (see reduce_budget).")
    parser.add_argument(
        "--robustness", action="store_true", help="Also run the relearning/quantization attacks."
    )
    parser.add_argument(
        "--quantizers", nargs="+", default=["rtn_int8", "rtn_int4"], help="Quantizers of the robustness step."
    )
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"TOFU data folder not found: {args.data} (pass --data)")
    console = Console()
    settings = settings_for(args.gpu, args.seed)
    if args.reduced:
        settings = reduce_budget(settings)
    if args.methods:
        settings.methods = ALL_METHODS if args.methods == ["all"] else tuple(args.methods)
    settings.method_overrides = {m: TINY_OVERRIDES[m] for m in settings.methods if m in TINY_OVERRIDES}
    settings.robustness, settings.quantizers = args.robustness, tuple(args.quantizers)
    start = time.perf_counter()
    result = run_quickstart(
        args.output_dir,
        settings,
        data=args.data,
        on_step=lambda m: console.print(f"[cyan]•[/] {m} [dim]({time.perf_counter() - start:.0f}s)[/]"),
    )
    console.print(result.report["markdown"].read_text())
    for line in verdict(result.rows):
        console.print(f"• {line}")
    timings = {k: round(v, 1) for k, v in result.timings.items()}
    console.print(f"Total {time.perf_counter() - start:.0f}s; stages: {json.dumps(timings)}")


if __name__ == "__main__":
    main()
