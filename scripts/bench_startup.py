"""What the cyclic garbage collector costs an ``alignkit eval tofu`` process, with and without
``alignkit.commands.startup``'s policy (the model stack frozen after its imports, everything frozen at exit).

Each run is one process running the console script's ``entry()`` on TOFU forget10 exactly as
``bench_eval_vs_ou.py`` runs it (the same tiny checkpoint, built there and cached under ``--work``; the
retain model's log of open-unlearning when that script has written it). ``gc.callbacks`` time every
collection; the process reports when ``main`` returned, and its parent when it ended. "without" replaces
``model_stack_imports`` by a plain context and ``freeze_for_exit`` by nothing: the same code otherwise.
Runs alternate (with, without, without, with, ...); prints medians and the with/without ratios.

Run: ``python scripts/bench_startup.py --repeats 6``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import spread  # noqa: E402

CHILD = """
import contextlib, gc, json, sys, time
spent, start, count = [0.0], [0.0], [0]
def timed(phase, info):
    if phase == "start":
        start[0] = time.perf_counter()
    else:
        spent[0] += time.perf_counter() - start[0]
        count[0] += 1
gc.callbacks.append(timed)
if sys.argv[1] == "without":
    import alignkit.commands.startup as startup
    startup.model_stack_imports = contextlib.nullcontext
    startup.freeze_for_exit = lambda: None
import alignkit.cli as cli
main = cli.main
def reported(argv=None):
    code = main(argv)
    print("STARTUP", json.dumps({"gc_s": spent[0], "collections": count[0], "main_end": time.time()}),
          file=sys.stderr, flush=True)
    return code
cli.main = reported
sys.argv = ["alignkit", *sys.argv[2:]]
cli.entry()
"""


def run(policy: str, argv: list[str], env: dict) -> dict:
    t = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, policy, *argv], capture_output=True, text=True, env=env, cwd=ROOT
    )  # fmt: skip
    end = time.time()
    if proc.returncode != 0:
        sys.exit(f"bench_startup: the {policy} run failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stderr.splitlines() if x.startswith("STARTUP "))
    rep = json.loads(line.split(" ", 1)[1])
    return {
        "wall": end - t,
        "gc": rep["gc_s"],
        "exit": end - rep["main_end"],
        "collections": rep["collections"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=4, help="runs per side, alternated")
    p.add_argument("--work", type=Path, default=Path("/tmp/ak_vs_ou"), help="bench_eval_vs_ou.py's folder")
    p.add_argument("--forget-split", default="forget10")
    args = p.parse_args()
    from bench_eval_vs_ou import prepare_models

    models = prepare_models(args.work, "tofu")
    out = args.work / "logs" / "startup_bench"
    argv = ["eval", "tofu", "--model", str(models["target"]), "--output-dir", str(out), "--no-progress"]
    argv += ["--data", str(SHARED / "tofu"), "--forget-split", args.forget_split, "--batch-size", "32"]
    argv += ["--prompt-format", "qa_plain"]
    retain_log = args.work / "logs" / f"tofu_{args.forget_split}_retain" / "TOFU_EVAL.json"
    if retain_log.exists():
        argv += ["--retain-logs", str(retain_log)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    runs: dict[str, list[dict]] = {"with": [], "without": []}
    for r in range(args.repeats):
        for policy in ("with", "without") if r % 2 == 0 else ("without", "with"):
            runs[policy].append(run(policy, argv, env))
            x = runs[policy][-1]
            print(
                f"run {r} {policy:7s} wall {x['wall']:6.2f} s  collector {x['gc']:5.2f} s in "
                f"{x['collections']:5d} collections  main's return to exit {x['exit']:5.2f} s",
                flush=True,
            )
    print(f"\nalignkit eval tofu {args.forget_split}, {args.repeats} alternated pairs (median, IQR)")
    for key, name in (("gc", "collector time"), ("exit", "main's return to exit"), ("wall", "wall")):
        w = spread([x[key] for x in runs["with"]], "median")
        o = spread([x[key] for x in runs["without"]], "median")
        ratio = spread([a[key] / b[key] for a, b in zip(runs["with"], runs["without"])])
        print(
            f"  {name:22s} with {w['median']:6.2f} s  without {o['median']:6.2f} s  "
            f"ratio {ratio['ratio']:.3f} (IQR {ratio['q1']:.3f}-{ratio['q3']:.3f})"
        )


if __name__ == "__main__":
    main()
