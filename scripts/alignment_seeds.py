"""The quickstart's alignment half over several seeds: mean ± std of every table metric (docs/results.md).

Each seed regenerates the synthetic tasks, the tiny model, the SFT model and every aligned model, so
the spread covers data, initialisation and training order. Settings: ``AlignmentSettings`` defaults.

    python scripts/alignment_seeds.py --seeds 0 1 2 --out runs/alignment_seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/alignment_seeds")
    args = parser.parse_args(argv)

    from alignkit.quickstart import QuickstartSettings, run_quickstart
    from alignkit.quickstart_alignment import COLUMNS

    per_seed, walls = {}, {}
    for seed in args.seeds:
        start = time.perf_counter()
        result = run_quickstart(
            Path(args.out) / f"seed{seed}", QuickstartSettings(seed=seed), progress=False, part="alignment"
        )
        walls[seed] = time.perf_counter() - start
        per_seed[seed] = result.alignment
        print(f"seed {seed}: {walls[seed]:.0f} s", flush=True)

    lines = []
    for task, columns in COLUMNS.items():
        lines += [f"**{task}** (held-out prompts; mean ± std over seeds {args.seeds})", ""]
        lines += ["| model | " + " | ".join(h for _, h in columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for model in per_seed[args.seeds[0]][task]:
            cells = []
            for key, _ in columns:
                values = [per_seed[s][task][model].get(key) for s in args.seeds]
                values = [v for v in values if v is not None]
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.3f} ± {std:.3f}" if values else "—")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(
        json.dumps({"per_seed": per_seed, "wall_s": walls}, indent=1, default=str)
    )
    (out / "seeds.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
