"""Wall time of a full TOFU evaluation on a tiny model, split by metric, with forward counts.

Builds two tiny Llama-shaped models (tokenizer trained on the TOFU eval texts; seeds 0 and 1 as
"unlearned" and "retain" model), runs ``evaluate_tofu`` on forget10 under the open-unlearning
protocol (all rows, 200 new tokens), and prints:

* the time per metric family: teacher-forced scoring (Prob + Truth Ratio share it), greedy
  generation (ROUGE), the retain model's forget truth ratios (Forget Quality), loading;
* forward counts: every (task, prompt, target) pair requested by the metrics, the unique pairs, the
  rows actually forwarded (equal to the unique pairs: nothing is scored twice), cache hits, and the
  model calls made by scoring and by generation (counted by a forward hook).

Run: ``python scripts/bench_tofu_eval.py [--data DIR] [--forget-split forget10] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from alignkit.eval import evaluate_tofu  # noqa: E402
from alignkit.models import build_tiny_model  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


def tofu_texts(data: Path, forget_split: str) -> list[str]:
    texts = []
    for name in (
        f"{forget_split}_perturbed",
        "retain_perturbed",
        "real_authors_perturbed",
        "world_facts_perturbed",
    ):
        for line in (data / f"{name}.json").read_text().splitlines():
            row = json.loads(line)
            texts += [v for k, v in row.items() if isinstance(v, str) and k != "option"]
            texts += row.get("perturbed_answer") or []
    return texts


class ForwardCounter:
    """Counts model calls and rows through a forward pre-hook."""

    def __init__(self, model):
        self.calls = 0
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls += 1
        self.rows += int(ids.shape[0]) if ids is not None else 0


def measure(
    data: Path,
    forget_split: str = "forget10",
    *,
    batch_size: int = 16,
    vocab_size: int = 512,
    max_examples: int | None = None,
    output_dir: Path | None = None,
) -> dict:
    """Build the two tiny models, run ``evaluate_tofu`` once; wall time, stage timings and counts."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        texts = tofu_texts(data, forget_split)
        model_dir = build_tiny_model(texts, Path(tmp) / "model", vocab_size=vocab_size, seed=0)
        retain_dir = build_tiny_model(texts, Path(tmp) / "retain", vocab_size=vocab_size, seed=1)
        build_s = time.perf_counter() - t

        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        retain = AutoModelForCausalLM.from_pretrained(retain_dir).eval()
        counter, retain_counter = ForwardCounter(model), ForwardCounter(retain)

        t = time.perf_counter()
        result = evaluate_tofu(
            model,
            tok,
            data=data,
            forget_split=forget_split,
            retain_model=retain,
            batch_size=batch_size,
            max_examples=max_examples,
            output_dir=output_dir or Path(tmp) / "run",
            progress=False,
        )
        wall = time.perf_counter() - t

    tm, st = result.timings, result.stats
    tasks = ("forget", "retain", "ra", "wf")
    stages = {
        "Prob + Truth Ratio (teacher-forced scoring)": sum(
            tm[f"{k}:score"] + tm[f"{k}:metrics"] for k in tasks
        ),
        "ROUGE-L (greedy generation)": sum(tm[f"{k}:generate"] for k in tasks),
        "ROUGE-L (rouge_score)": sum(tm[f"{k}:rouge"] for k in tasks),
        "Forget Quality (retain model's forget truth ratios + KS)": tm["retain_reference"] + tm["aggregate"],
        "reading files": tm["load"],
    }
    return {
        "forget_split": forget_split,
        "wall_s": wall,
        "build_s": build_s,
        "stages": stages,
        "timings": dict(tm),
        "stats": dict(st),
        "meta": result.meta,
        "summary": result.summary,
        "model_calls": counter.calls,
        "retain_model_calls": retain_counter.calls,
        "threads": torch.get_num_threads(),
    }


def print_report(r: dict, console: Console) -> None:
    wall, tm, meta = r["wall_s"], r["timings"], r["meta"]
    tasks = ("forget", "retain", "ra", "wf")
    table = Table(
        title=f"TOFU {r['forget_split']} on a tiny model: {wall:.1f} s wall ({r['threads']} thread)"
    )
    table.add_column("metric family")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for name, sec in r["stages"].items():
        table.add_row(name, f"{sec:.2f}", f"{100 * sec / wall:.0f}%")
    table.add_row("[bold]total", f"[bold]{wall:.2f}", "")
    console.print(table)

    per_task = Table(title="per task (seconds)")
    for col in ("task", "items", "score", "generate", "rouge"):
        per_task.add_column(col, justify="right" if col != "task" else "left")
    for k in tasks:
        per_task.add_row(
            k,
            str(meta["n"][k]),
            f"{tm[f'{k}:score']:.2f}",
            f"{tm[f'{k}:generate']:.2f}",
            f"{tm[f'{k}:rouge']:.2f}",
        )
    console.print(per_task)

    counts = Table(title="forwards (model under evaluation)")
    counts.add_column("count")
    counts.add_column("value", justify="right")
    for name, value in forward_counts(r):
        counts.add_row(name, value)
    console.print(counts)
    s = r["summary"]
    console.print(
        f"FQ {s['forget_quality']:.3e}  MU {s['model_utility']:.4f}  forget ROUGE {s['forget_rouge']:.4f}  "
        f"(random tiny models; build {r['build_s']:.1f} s not counted)"
    )


def forward_counts(r: dict) -> list[tuple[str, str]]:
    st = r["stats"]
    gen_calls = r["model_calls"] - st["score_forwards"]
    return [
        ("(task, prompt, target) pairs requested by the metrics", str(st["score_requested"])),
        ("unique pairs", str(st["score_unique_requested"])),
        ("rows forwarded for scoring", str(st["score_sequences"])),
        ("pairs scored twice", str(st["score_sequences"] - st["score_unique_requested"])),
        ("cache hits (RA/WF 'correct' = answer)", str(st["score_cache_hits"])),
        ("scoring forwards (batches)", str(st["score_forwards"])),
        ("generate() calls / sequences", f"{st['generate_calls']} / {st['generated_sequences']}"),
        ("generation forwards (prefill + decode steps, KV cache)", str(gen_calls)),
        ("retain model forwards (forget para + pert only)", str(r["retain_model_calls"])),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Folder with the TOFU json files.")
    ap.add_argument("--forget-split", default="forget10")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for tiny models)."
    )
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--max-examples", type=int, help="First N rows of each file (default: all).")
    ap.add_argument("--output-dir", type=Path, help="Keep the run's logs here (default: a temp folder).")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"TOFU data not found at {args.data}; pass --data DIR", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    result = measure(
        args.data,
        args.forget_split,
        batch_size=args.batch_size,
        vocab_size=args.vocab_size,
        max_examples=args.max_examples,
        output_dir=args.output_dir,
    )
    print_report(result, Console())
    st = result["stats"]
    assert st["score_sequences"] == st["score_unique_requested"], "a pair was forwarded twice"
    return 0


if __name__ == "__main__":
    sys.exit(main())
