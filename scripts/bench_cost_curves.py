"""How evaluation and sampling cost grows with the work: CPU seconds, so a loaded machine bends the curves less.

* ``tofu``: ``alignkit eval tofu`` on forget01 / forget05 / forget10 (CPU time user + system of the whole
  process, ``/usr/bin/time``; the splits taken in turn, ``--repeats`` rounds, the median reported), on a
  model folder (``--model``; ``scripts/bench_eval_vs_ou.py`` builds the tiny fine-tuned TOFU checkpoint it
  uses).
* ``sampler``: ``alignkit.sampling.sample_prompts`` (the sampler D²O, AltPO and AFT draw with), CPU time
  against K (completions per prompt) at a fixed prompt count, and against the prompt count at a fixed K
  (median of ``--repeats`` draws per point).

``--json FILE`` adds the results to FILE (one key per curve); ``--plot FILE`` draws
``docs/cost_tofu_splits.png`` and ``docs/cost_sampler.png`` from it.

Run: ``python scripts/bench_cost_curves.py tofu --model DIR --json docs/cost_curves.json``,
``python scripts/bench_cost_curves.py sampler --model DIR --json docs/cost_curves.json``, then
``python scripts/bench_cost_curves.py --plot docs/cost_curves.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOFU = ROOT.parent / "shared" / "data" / "tofu"


def tofu_curve(model: Path, splits: list[str], batch_size: int, repeats: int) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    runs: dict[str, list[tuple[float, float]]] = {split: [] for split in splits}
    items = {}
    for r in range(repeats):
        for split in splits if r % 2 == 0 else splits[::-1]:
            out = Path("/tmp") / f"ak_cost_curve_{split}"
            cmd = [
                "/usr/bin/time",
                "-f",
                "%U %S %e",
                str(Path(sys.executable).parent / "alignkit"),
                "eval",
                "tofu",
            ]
            cmd += ["--model", str(model), "--output-dir", str(out), "--no-progress", "--data", str(TOFU)]
            cmd += ["--forget-split", split, "--batch-size", str(batch_size), "--prompt-format", "qa_plain"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"error: alignkit eval tofu --forget-split {split} failed:\n{proc.stderr[-2000:]}")
            user, system, wall = map(float, proc.stderr.strip().splitlines()[-1].split())
            items[split] = json.loads((out / "TOFU_EVAL.json").read_text())["alignkit"]["n"]
            runs[split].append((user + system, wall))
            print(
                f"{split}: {user + system:.1f} s CPU ({wall:.0f} s wall), load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    return [
        {
            "split": split,
            "cpu_s": statistics.median(c for c, _ in runs[split]),
            "wall_s": statistics.median(w for _, w in runs[split]),
            "cpu_runs": [c for c, _ in runs[split]],
            "items": items[split],
        }
        for split in splits
    ]


def sampler_curve(
    model_dir: Path,
    ks: list[int],
    counts: list[int],
    max_new_tokens: int,
    repeats: int,
    fixed_k: int,
    fixed_n: int,
) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.sampling import SamplingSettings, sample_prompts

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    questions = [json.loads(line)["question"] for line in (TOFU / "retain90.json").read_text().splitlines()]
    prompts = [tokenizer(f"Question: {q}\nAnswer: ")["input_ids"] for q in questions]

    def run(k: int, n: int) -> dict:
        settings = SamplingSettings(num_samples=k, max_new_tokens=max_new_tokens, batch_size=16)
        cpu = []
        for _ in range(repeats):
            t = time.process_time()
            result = sample_prompts(model, tokenizer, prompts[:n], settings, show_progress=False)
            cpu.append(time.process_time() - t)
        return {
            "k": k,
            "prompts": n,
            "cpu_s": statistics.median(cpu),
            "cpu_runs": cpu,
            "calls": result.generate_calls,
            "new_tokens": result.new_tokens,
        }

    out = {"settings": {"max_new_tokens": max_new_tokens, "prompts_per_call": 16, "repeats": repeats}}
    out["vs_k"] = []
    for k in ks:
        out["vs_k"].append(run(k, fixed_n))
        print("K", out["vs_k"][-1], flush=True)
    out["vs_prompts"] = []
    for n in counts:
        out["vs_prompts"].append(run(fixed_k, n))
        print("prompts", out["vs_prompts"][-1], flush=True)
    return out


def plot(results: dict, folder: Path) -> None:
    """``cost_tofu_splits.png`` (TOFU eval CPU time vs forget items) and ``cost_sampler.png`` (vs K, vs prompts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "tofu" in results:
        pts = results["tofu"]
        forget = [p["items"]["forget"] for p in pts]
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ax.plot(forget, [p["cpu_s"] for p in pts], "o-", label="median")
        for x, p in zip(forget, pts):
            ax.plot([x] * len(p["cpu_runs"]), p["cpu_runs"], ".", color="grey", alpha=0.6)
            ax.annotate(p["split"], (x, p["cpu_s"]), textcoords="offset points", xytext=(4, -12), fontsize=8)
        ax.set_xlabel("forget items (retain, real authors, world facts fixed: 617)")
        ax.set_ylabel("CPU s, whole `alignkit eval tofu`")
        ax.set_ylim(bottom=0)
        ax.set_title("TOFU evaluation cost against the forget split")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / "cost_tofu_splits.png", dpi=110)
    if "sampler" in results:
        res = results["sampler"]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        for ax, key, x, fixed in (
            (axes[0], "vs_k", "k", f"{res['vs_k'][0]['prompts']} prompts"),
            (axes[1], "vs_prompts", "prompts", f"K = {res['vs_prompts'][0]['k']}"),
        ):
            pts = res[key]
            xs = [p[x] for p in pts]
            ax.plot(xs, [p["cpu_s"] for p in pts], "o-", label="CPU s")
            per = [p["cpu_s"] / p["new_tokens"] * 1000 for p in pts]
            twin = ax.twinx()
            twin.plot(xs, per, "s--", color="tab:orange", label="ms per new token")
            twin.set_ylabel("ms per new token", color="tab:orange")
            twin.set_ylim(bottom=0)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("K (completions per prompt)" if x == "k" else "prompts")
            ax.set_ylabel("CPU s")
            ax.set_ylim(bottom=0)
            ax.set_title(f"sampler, {fixed}, 16 prompts per call")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / "cost_sampler.png", dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", choices=("tofu", "sampler"))
    p.add_argument("--model", type=Path)
    p.add_argument("--splits", default="forget01,forget05,forget10")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ks", default="1,2,4,8,16,32")
    p.add_argument("--prompts", default="2,4,8,16,32,64,128")
    p.add_argument("--fixed-k", type=int, default=4, help="K of the curve against the prompt count")
    p.add_argument("--fixed-prompts", type=int, default=16, help="prompt count of the curve against K")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--json", type=Path, help="add the results to this file (one key per curve)")
    p.add_argument("--plot", type=Path, help="draw the figures of this results file into its folder")
    a = p.parse_args()
    if a.plot:
        plot(json.loads(a.plot.read_text()), a.plot.parent)
        return
    if a.what is None or a.model is None:
        p.error("name a curve (tofu or sampler) and --model, or pass --plot RESULTS.json")
    if a.what == "tofu":
        res = tofu_curve(a.model, a.splits.split(","), a.batch_size, a.repeats)
    else:
        res = sampler_curve(
            a.model, [int(k) for k in a.ks.split(",")], [int(n) for n in a.prompts.split(",")],
            a.max_new_tokens, a.repeats, a.fixed_k, a.fixed_prompts,
        )  # fmt: skip
    res = {"load_average": os.getloadavg(), "results": res}
    if a.json:
        old = json.loads(a.json.read_text()) if a.json.exists() else {}
        a.json.write_text(
            json.dumps({**old, a.what: res["results"], f"{a.what}_load": res["load_average"]}, indent=1)
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
