"""Constrained unlearning on the generated TOFU benchmark: NPO, NPO + retain-NLL constraint (3 eps), PDU, HAMU.

    python scripts/constraints_benchmark.py                  # runs/constraints_benchmark, CPU, ~10-20 min
    python scripts/constraints_benchmark.py --output-dir DIR --eps 0.05 0.2 0.5

The quickstart pipeline (``alignkit.quickstart``: generated benchmark, tiny target and oracle models,
TOFU evaluation, comparison table and FQ-vs-MU plot) with the same budget for every method: the
quickstart's 5 epochs at batch 4 on forget10 (25 steps). Adam at lr 1e-3 for NPO and PDU, dual_lr 10; HAMU is an SGD method
whose step is ``lr·||g_r||`` (a guarantee that Adam would rescale away), so it gets SGD at lr 0.5 and
the official continue-on-infeasible fallback. Writes ``tofu_comparison.md``, ``fq_vs_mu.png`` and, per
constrained run, the constraint's final report (``models/<label>/constraints_report.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402

from alignkit.quickstart import QuickstartSettings, run_quickstart  # noqa: E402


def settings(eps: list[float], seed: int, dual_lr: float, hamu_lr: float) -> QuickstartSettings:
    overrides: dict[str, dict] = {
        f"npo_eps{e:g}": {
            "method": "npo",
            "constraints": [{"fn": "retain_nll", "eps": e, "dual_lr": dual_lr}],
        }
        for e in eps
    }
    overrides["pdu"] = {
        "retain_weight": 1.0,
        "retain_eps": min(eps),
        "dual_lr": dual_lr,
        "dual_warmup_epochs": 1.0,
    }
    overrides["hamu"] = {"learning_rate": hamu_lr, "continue_on_failed_feasibility": True}
    return QuickstartSettings(methods=("npo", *overrides), method_overrides=overrides, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", default="runs/constraints_benchmark")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.2, 0.5])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dual-lr", type=float, default=10.0, help="dual step size of every constraint")
    parser.add_argument("--hamu-lr", type=float, default=0.5, help="HAMU's SGD rate (its radius scale)")
    args = parser.parse_args()
    console = Console()
    start = time.perf_counter()
    result = run_quickstart(
        args.output_dir,
        settings(args.eps, args.seed, args.dual_lr, args.hamu_lr),
        on_step=lambda m: console.print(f"[cyan]•[/] {m} [dim]({time.perf_counter() - start:.0f}s)[/]"),
    )
    console.print(result.report["markdown"].read_text())
    for label in result.rows:
        report = Path(args.output_dir) / "models" / label / "constraints_report.json"
        if report.is_file():
            for r in json.loads(report.read_text()):
                console.print(
                    f"{label}: {r['name']} {'held' if r['held'] else 'VIOLATED'} (mean {r['mean']:.4f} vs eps "
                    f"{r['eps']:.4g} over the last {r['steps']} steps, final lambda {r['lambda']:.3g})"
                )
    console.print(f"Total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
