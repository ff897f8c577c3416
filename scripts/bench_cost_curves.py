"""How evaluation and sampling cost grows with the work: CPU seconds, so a loaded machine bends the curves less.

* ``tofu``: ``alignkit eval tofu`` on forget01 / forget05 / forget10 (CPU time user + system of the whole
  process, ``/usr/bin/time``), on a model folder (``--model``; ``scripts/bench_eval_vs_ou.py`` builds the tiny
  fine-tuned TOFU checkpoint it uses).
* ``sampler``: ``alignkit.sampling.sample_prompts`` (the sampler D²O, AltPO and AFT draw with), CPU time
  against K (completions per prompt) at a fixed prompt count, and against the prompt count at a fixed K.

Run: ``python scripts/bench_cost_curves.py tofu --model DIR`` / ``python scripts/bench_cost_curves.py sampler --model DIR``.
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
TOFU = ROOT.parent / "shared" / "data" / "tofu"


def tofu_curve(model: Path, splits: list[str], batch_size: int) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    rows = []
    for split in splits:
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
        n = json.loads((out / "TOFU_EVAL.json").read_text())["alignkit"]["n"]
        rows.append({"split": split, "cpu_s": user + system, "wall_s": wall, "items": n})
        print(f"{split}: {user + system:.1f} s CPU ({wall:.0f} s wall), items {n}", flush=True)
    return rows


def sampler_curve(model_dir: Path, ks: list[int], counts: list[int], max_new_tokens: int) -> dict:
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
        t = time.process_time()
        result = sample_prompts(model, tokenizer, prompts[:n], settings, show_progress=False)
        cpu = time.process_time() - t
        return {
            "k": k,
            "prompts": n,
            "cpu_s": cpu,
            "calls": result.generate_calls,
            "new_tokens": result.new_tokens,
        }

    out = {"vs_k": [], "vs_prompts": []}
    for k in ks:
        out["vs_k"].append(run(k, counts[len(counts) // 2]))
        print("K", out["vs_k"][-1], flush=True)
    for n in counts:
        out["vs_prompts"].append(run(4, n))
        print("prompts", out["vs_prompts"][-1], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("tofu", "sampler"))
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--splits", default="forget01,forget05,forget10")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ks", default="1,2,4,8,16")
    p.add_argument("--prompts", default="4,8,16,32,64")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if a.what == "tofu":
        res = tofu_curve(a.model, a.splits.split(","), a.batch_size)
    else:
        res = sampler_curve(
            a.model,
            [int(k) for k in a.ks.split(",")],
            [int(n) for n in a.prompts.split(",")],
            a.max_new_tokens,
        )
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
