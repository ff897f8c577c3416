"""Peak resident memory of ``alignkit eval muse`` on the whole MUSE-News sample at several vocabularies.

For each vocabulary size: a tiny Llama (hidden 64, 2 layers, 4,096 positions, tokenizer of 4,000
tokens trained on the sample's forget articles and knowmem QA), its embeddings and head resized to
the vocabulary (``torch.manual_seed(0)``, no mean resizing), saved; then ``/usr/bin/time -v alignkit
eval muse`` on it, one process at a time, and the kernel's "Maximum resident set size" is read back.
If the peak did not depend on the vocabulary it stays flat from 4k to 128k; full-vocabulary
``[B, L, V]`` logits would add ``8 x 2048 x V x 4`` bytes (4.2 GB at 128,256) per batch of 8 texts.

Run: ``python scripts/bench_muse_memory.py [--vocabs 4000,32000,128256] [--max-examples N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "muse_news_sample"


def build(folder: Path, vocab: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from alignkit.models import build_tiny_model

    if (folder / "config.json").exists():
        return folder
    articles = json.loads((DATA / "raw" / "forget.json").read_text())
    qa = json.loads((DATA / "knowmem" / "forget_qa.json").read_text())
    texts = articles + [q["question"] + " " + q["answer"] for q in qa]
    build_tiny_model(texts, folder, vocab_size=4000, max_position_embeddings=4096, seed=0)
    if vocab != 4000:
        model = AutoModelForCausalLM.from_pretrained(folder)
        torch.manual_seed(0)
        model.resize_token_embeddings(vocab, mean_resizing=False)
        model.save_pretrained(folder)
    return folder


def peak_mb(model: Path, out: Path, max_examples: int | None) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one ``alignkit eval muse`` run."""
    cmd = ["/usr/bin/time", "-v", str(Path(sys.executable).parent / "alignkit"), "eval", "muse"]
    cmd += ["--model", str(model), "--data", str(DATA), "--output-dir", str(out), "--no-progress"]
    if max_examples:
        cmd += ["--max-examples", str(max_examples)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    proc = subprocess.run(["nice", "-n", "10", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"error: alignkit eval muse failed on {model}:\n{proc.stderr[-2000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return kb / 1024, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocabs", default="4000,32000,128256")
    p.add_argument("--max-examples", type=int, default=None, help="first N items of every set (default: all)")
    p.add_argument("--work", type=Path, default=Path("/tmp/ak_muse_memory"))
    args = p.parse_args()
    rows = []
    for vocab in (int(v) for v in args.vocabs.split(",")):
        model = build(args.work / f"v{vocab}", vocab)
        mb, wall = peak_mb(model, args.work / f"out_v{vocab}", args.max_examples)
        rows.append((vocab, mb, wall))
        print(
            f"vocab {vocab:>7,}: peak RSS {mb:,.0f} MB, wall {wall:.0f} s, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    print("\n| vocabulary | peak RSS (MB) | wall (s) |\n|---|---|---|")
    for vocab, mb, wall in rows:
        print(f"| {vocab:,} | {mb:,.0f} | {wall:.0f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
