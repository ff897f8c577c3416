"""The performance ratios of issue 16, measured side by side in one run; writes docs/performance.md.

One process, one tiny Llama-shaped model (``bench_reference.MODEL_SIZE``: hidden 256, 4 layers; big
enough that a forward outweighs Python overhead on a CPU), the same batches for both sides of each
ratio. The two sides of a ratio are two trainers built once and stepped in turn (A B, B A, ...) on
the same batches, so each step's ratio is taken under the same machine load; the median and the
interquartile range over steps are reported. A step is ``Trainer.training_step`` (the trainer's own
``compute_loss`` and backward) plus an AdamW step, for alignkit's trainers and TRL's alike.

Sections:

1. ``dpo``: alignkit ``dpo`` vs ``trl.DPOTrainer`` (sigmoid), same pairs, both with a separate
   reference model. Target <= 1.05x.
2. ``lipo``: LiPO-λ on lists of K=4 vs TRL DPO on the 6 pairs of the same lists, in pair relations
   per second (4 sequences for 6 relations vs 12). Target >= 2.5x.
3. ``share_prompt``: the flat forward vs ``share_prompt=True`` (a list's prompt encoded once) on LiPO
   K=4 steps whose prompts are 4x and 8x longer than the completions, and forward+backward alone
   over a range of prompt:completion ratios (where it does not pay). Target >= 1.5x at >= 4x.
4. ``reference``: NPO with ``ref_mode=precomputed`` vs online, with the reference-forward share of
   the online step; adapter-off peak memory vs plain LoRA SFT (``scripts/bench_reference.py``).
5. ``tofu``: TOFU forget10 evaluation wall time by stage, forwards vs distinct rows scored
   (``scripts/bench_tofu_eval.py``; needs ../shared/data/tofu).
6. ``profile``: ``torch.profiler`` over LiPO steps (flat forward): the operators that dominate.

    python scripts/bench.py [--quick] [--sections dpo,lipo,...] [--out docs/performance.md]

Absolute numbers depend on the machine and its load; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench_alignment  # noqa: E402  (scripts/: the whole-run DPO/LiPO benchmark; its settings)
import bench_reference  # noqa: E402  (scripts/: the NPO reference and memory benchmark)
import d2o_safety  # noqa: E402  (scripts/: D²O's sampling-throughput measurement)
import torch  # noqa: E402

SECTIONS = ("dpo", "lipo", "share_prompt", "reference", "tofu", "sampling", "profile")


# --------------------------------------------------------------------------- side-by-side stepping


class Stepper:
    """A built trainer stepped by hand on fixed batches: ``training_step`` + AdamW."""

    def __init__(self, trainer, num_batches: int):
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        self.trainer, self.model = trainer, trainer.model
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this replaces
        loader = trainer.get_train_dataloader()
        self.batches, it = [], iter(loader)
        while len(self.batches) < num_batches:
            try:
                self.batches.append(next(it))
            except StopIteration:
                it = iter(loader)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-5)

    def step(self, i: int) -> float:
        start = time.perf_counter()
        self.trainer.training_step(self.model, self.batches[i])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.model.device.type == "cuda":  # kernels run asynchronously: wait for the step's last one
            torch.cuda.synchronize()
        return time.perf_counter() - start


def alternate(a: Stepper, b: Stepper, steps: int, warmup: int) -> dict:
    """Step A and B in turn (A B, B A, ...); per-step time ratios A/B: median and quartiles."""
    ta, tb = [], []
    for i in range(steps):
        for side, times in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            times.append(side.step(i))
    ta, tb = ta[warmup:], tb[warmup:]
    return {
        "a_s": statistics.median(ta),
        "b_s": statistics.median(tb),
        **spread([x / y for x, y in zip(ta, tb)]),
    }


def spread(values: list[float], key: str = "ratio") -> dict:
    """The median (under ``key``), quartiles and count of ``values``."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {key: statistics.median(values), "q1": q[0], "q3": q[-1], "n": len(values)}


def fmt_ratio(r: dict) -> str:
    return f"{r['ratio']:.3f} (IQR {r['q1']:.3f}-{r['q3']:.3f}, {r['n']} steps)"


def train_args(out, batch: int, steps: int, **overrides) -> dict:
    """``bench_alignment``'s settings (no saving, no logging, CPU, seed 0); ``overrides`` replace them
    (``use_cpu=False, bf16=True`` on a GPU)."""
    return {**bench_alignment.common_args(str(out), steps, batch), **overrides}


def ours(method: str, model_dir, rows, out, batch: int, steps: int, device_args=None, **overrides) -> Stepper:
    """``device_args``: training arguments replacing ``train_args``' CPU settings (see bench_gpu.py)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit import get_method

    spec = get_method(method)
    overrides.setdefault("ref_mode", "model")
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(model_dir)
        if overrides["ref_mode"] == "model"
        else None,
        args=spec.make_config(**train_args(out, batch, steps, **(device_args or {})), **overrides),
        train_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    return Stepper(trainer, steps)


def trl_dpo(model_dir, pairs, out, batch: int, steps: int) -> Stepper:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        ref_model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=DPOConfig(**train_args(out, batch, steps), beta=0.1, bf16=False),
        train_dataset=datasets.Dataset.from_list(pairs),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    return Stepper(trainer, steps)


# --------------------------------------------------------------------------- data and model


def long_context(rng: random.Random, words: int) -> str:
    """A prompt preamble of ``words`` words, drawn from the task vocabulary (for long-prompt lists)."""
    from alignkit.data.synthetic.preference import ANIMALS, COLOURS

    vocab = list(ANIMALS) + list(COLOURS) + ["the", "a", "of", "and", "with", "near", "under", "over"]
    return " ".join(rng.choice(vocab) for _ in range(words)) + "."


def make_data(context_words=(0, 20, 60)) -> dict:
    from alignkit.data.synthetic.preference import graded_list_task, recommendation_task, to_pairwise

    rec = recommendation_task(num_users=64, num_negatives=1, seed=0).records
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"][0]} for r in rec]
    lists = graded_list_task(num_prompts=64, num_completions=4, seed=0).records
    rng = random.Random(0)
    long_lists = {
        w: [dict(r, prompt=f"{long_context(rng, w)} {r['prompt']}") if w else r for r in lists]
        for w in context_words
    }
    return {"pairs": pairs, "lists": lists, "all_pairs": to_pairwise(lists), "long_lists": long_lists}


def token_lengths(model_dir, rows: list[dict]) -> tuple[float, float]:
    """Mean prompt and completion lengths in tokens, as the collator encodes them."""
    from transformers import AutoTokenizer

    from alignkit.data import PreferenceCollator, prepare_dataset

    collator = PreferenceCollator(AutoTokenizer.from_pretrained(model_dir))
    enc = prepare_dataset(rows[:16], collator, name="bench", on_invalid="raise")
    prompts = [len(p) for r in enc for p in r["prompt_ids"]]
    completions = [len(c) for r in enc for c in r["completion_ids"]]
    return statistics.mean(prompts), statistics.mean(completions)


# --------------------------------------------------------------------------- sections


def bench_dpo(ctx) -> dict:
    out = Path(ctx["tmp"]) / "dpo"
    a = ours("dpo", ctx["model_dir"], ctx["data"]["pairs"], out / "ours", 8, ctx["steps"])
    b = trl_dpo(ctx["model_dir"], ctx["data"]["pairs"], out / "trl", 8, ctx["steps"])
    r = alternate(a, b, ctx["steps"], ctx["warmup"])
    line = f"DPO step, alignkit / TRL DPOTrainer: {fmt_ratio(r)}; {r['a_s'] * 1e3:.1f} vs {r['b_s'] * 1e3:.1f} ms"
    return {**r, "line": line, "target": "<= 1.05", "met": r["ratio"] <= 1.05}


def bench_lipo(ctx) -> dict:
    out, lists = Path(ctx["tmp"]) / "lipo", 4
    a = ours("lipo", ctx["model_dir"], ctx["data"]["lists"], out / "ours", lists, ctx["steps"])
    b = trl_dpo(ctx["model_dir"], ctx["data"]["all_pairs"], out / "trl", 6 * lists, ctx["steps"])
    r = alternate(a, b, ctx["steps"], ctx["warmup"])
    relations = 6 * lists
    speedup = {"ratio": 1 / r["ratio"], "q1": 1 / r["q3"], "q3": 1 / r["q1"], "n": r["n"]}
    line = (
        f"LiPO K=4 vs TRL DPO on the 6 pairs, pair relations/s: {relations / r['a_s']:.0f} vs "
        f"{relations / r['b_s']:.0f} -> {fmt_ratio(speedup)}"
    )
    return {**r, "speedup": speedup, "line": line, "target": ">= 2.5", "met": speedup["ratio"] >= 2.5}


def bench_share_prompt(ctx) -> dict:
    """Trainer steps (LiPO K=4, reference model) flat vs shared, and forward+backward alone at set lengths."""
    results = {"steps": [], "forward": []}
    for words, rows in ctx["data"]["long_lists"].items():
        p, c = token_lengths(ctx["model_dir"], rows)
        out = Path(ctx["tmp"]) / f"share{words}"
        a = ours("lipo", ctx["model_dir"], rows, out / "flat", 4, ctx["steps"])
        b = ours("lipo", ctx["model_dir"], rows, out / "shared", 4, ctx["steps"], share_prompt=True)
        r = alternate(a, b, ctx["steps"], ctx["warmup"])
        results["steps"].append({"prompt_tokens": p, "completion_tokens": c, **r})
    from transformers import AutoModelForCausalLM

    from alignkit import _trl_compat
    from alignkit.trainers.forward import row_outputs

    model = AutoModelForCausalLM.from_pretrained(ctx["model_dir"])
    _trl_compat.add_fused_lm_head(model)
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    for p, c in [(256, 32), (128, 32), (64, 32), (32, 32), (16, 64), (8, 128)]:
        rows = []
        for _ in range(4):
            prompt = torch.randint(5, vocab, (p,), generator=gen)
            rows += [torch.cat([prompt, torch.randint(5, vocab, (c,), generator=gen)]) for _ in range(4)]
        ids = torch.stack(rows)
        completion = torch.zeros_like(ids)
        completion[:, p:] = 1
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion}
        times = {False: [], True: []}
        for i in range(ctx["fwd_repeats"]):
            for share in (False, True) if i % 2 == 0 else (True, False):
                start = time.perf_counter()
                row_outputs(
                    model, batch, want_logits=False, fused=True, share_prompt=share
                ).seq_logps.sum().backward()
                times[share].append(time.perf_counter() - start)
        ratios = [f / s for f, s in zip(times[False][1:], times[True][1:])]
        results["forward"].append({"prompt_tokens": p, "completion_tokens": c, **spread(ratios)})
    return results


def bench_reference_modes(ctx) -> dict:
    rows, _ = bench_reference._data(20)
    timing = bench_reference.bench_time(
        ctx["model_dir"],
        rows,
        Path(ctx["tmp"]) / "ref_cache",
        steps=ctx["steps"],
        warmup=ctx["warmup"],
        batch_size=8,
        pairs=bench_reference.TIME_PAIRS,
    )
    memory = bench_reference.bench_memory(
        ctx["model_dir"], threads=1, steps=6, repeats=ctx["mem_repeats"], batch_size=8, num_people=20
    )
    return {"timing": timing, "memory": memory}


def bench_tofu(ctx) -> dict:
    data = ROOT.parent / "shared" / "data" / "tofu"
    if not data.is_dir():
        return {"skipped": f"{data} not found"}
    import bench_tofu_eval

    return bench_tofu_eval.measure(data, "forget10", batch_size=16)


def bench_profile(ctx) -> dict:
    from torch.profiler import ProfilerActivity, profile

    stepper = ours("lipo", ctx["model_dir"], ctx["data"]["long_lists"][20], Path(ctx["tmp"]) / "prof", 4, 8)
    for i in range(2):
        stepper.step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(2, 8):
            stepper.step(i)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {
        "total_ms": total / 1e3,
        "top": [
            {
                "op": e.key,
                "self_ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / total,
                "calls": e.count,
            }
            for e in top
        ],
    }


def bench_sampling(ctx) -> dict:
    """D²O's sampler: 64 prompts x K=4, 24 new tokens, one prompt per `generate` call vs 16 and 64."""
    prompts = [r["prompt"] for r in ctx["data"]["pairs"]][:64]
    r = d2o_safety.throughput(Path(ctx["model_dir"]), prompts, k=4, max_new_tokens=24)
    one, best = r[1]["completions_per_second"], max(r[b]["completions_per_second"] for b in (16, 64))
    line = f"sampling: {one:.1f} completions/s one prompt per call, {best:.1f} batched ({best / one:.1f}x)"
    return {**r, "prompts": len(prompts), "line": line}


RUNNERS = {
    "dpo": bench_dpo,
    "lipo": bench_lipo,
    "share_prompt": bench_share_prompt,
    "reference": bench_reference_modes,
    "tofu": bench_tofu,
    "sampling": bench_sampling,
    "profile": bench_profile,
}


# --------------------------------------------------------------------------- report


def versions() -> dict:
    import accelerate
    import peft
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "accelerate": accelerate.__version__,
        "peft": peft.__version__,
    }


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{cpu}, {os.cpu_count()} logical CPUs, no GPU; torch threads 1"


def markdown(res: dict, meta: dict) -> str:
    out = [
        "# Performance",
        "",
        "Written by `scripts/bench.py` (issue 16). Ratios are measured side by side in one run: the two",
        "sides of a ratio are trainers built once and stepped in turn (A B, B A, ...) on the same batches,",
        "so each step's ratio is taken under the same load; medians and interquartile ranges over steps.",
        "",
        f"* command: `{meta['command']}`",
        f"* date: {meta['date']}; wall time of the run: {meta['wall_s']:.0f} s",
        f"* machine: {meta['machine']}",
        f"* load: {meta['load_before']} (1/5/15-min load average before) / {meta['load_after']} (after). "
        "**Other jobs were running on the machine's cores throughout**; absolute times are noisy, the "
        "ratios less so (see the IQRs).",
        f"* versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        f"* model: {meta['model']}",
        "* GPU part of the issue (MFU of a 1B model in bf16, fused LM head on/off step time, ZeRO-3 / FSDP2 on",
        "  a GPU): **not measured, no GPU was lent to this task.**",
        *([f"* not measured: {meta['missing']}"] if meta.get("missing") else []),
        "",
    ]
    if "dpo" in res or "lipo" in res:
        out += ["## Alignment step cost", "", "| ratio | measured | target | met |", "|---|---|---|---|"]
        if "dpo" in res:
            r = res["dpo"]
            out.append(
                f"| DPO step time, alignkit `dpo` / TRL `DPOTrainer` (batch 8 pairs) | {fmt_ratio(r)}; {r['a_s'] * 1e3:.1f} vs {r['b_s'] * 1e3:.1f} ms | {r['target']} | {'yes' if r['met'] else 'no'} |"
            )
        if "lipo" in res:
            r = res["lipo"]
            out.append(
                f"| pair relations/s, LiPO K=4 (4 lists) / TRL DPO on the 6 pairs (24 pairs) | {fmt_ratio(r['speedup'])} | {r['target']} | {'yes' if r['met'] else 'no'} |"
            )
        out.append("")
    if "share_prompt" in res:
        r = res["share_prompt"]
        out += [
            "## A list's prompt encoded once (`share_prompt=True`)",
            "",
            "LiPO-λ, K=4, batch 4 lists, reference model: training step time flat / shared (>1: shared is faster).",
            "",
            "| prompt tokens | completion tokens | prompt/completion | speed-up (flat/shared) | flat ms | shared ms |",
            "|---|---|---|---|---|---|",
        ]
        for s in r["steps"]:
            out.append(
                f"| {s['prompt_tokens']:.0f} | {s['completion_tokens']:.0f} | {s['prompt_tokens'] / s['completion_tokens']:.1f} | {fmt_ratio(s)} | {s['a_s'] * 1e3:.1f} | {s['b_s'] * 1e3:.1f} |"
            )
        out += [
            "",
            "Forward + backward alone (fused LM head, 4 lists of K=4, random tokens), flat / shared:",
            "",
            "| prompt tokens | completion tokens | speed-up |",
            "|---|---|---|",
        ]
        for s in r["forward"]:
            out.append(f"| {s['prompt_tokens']} | {s['completion_tokens']} | {fmt_ratio(s)} |")
        losing = [f"{s['prompt_tokens']}:{s['completion_tokens']}" for s in r["forward"] if s["ratio"] < 1.0]
        out += [
            "",
            "Packed, a list of K costs `P + K(C+1) - 1` token positions instead of `K(P + C)` (plus the",
            "padding of each to the longest in the batch), so the saving grows with P/C and K. It does not",
            "pay where completions are as long as prompts or longer: there the tokens saved are few and the",
            "block mask makes attention run over the whole packed row (quadratic in `P + KC`) with a dense",
            "mask instead of the causal kernel"
            + (f" (slower here at prompt:completion {', '.join(losing)})." if losing else ".")
            + " Unlearning rows (one completion per prompt) are never packed. The switch stays off by default.",
            "",
        ]
    if "reference" in res:
        out += reference_md(res["reference"])
    if "tofu" in res:
        out += tofu_md(res["tofu"])
    if "sampling" in res:
        out += sampling_md(res["sampling"])
    if "profile" in res:
        p = res["profile"]
        out += [
            "## Profile of the hot path",
            "",
            f"`torch.profiler` over 6 LiPO K=4 training steps (flat forward, prompts ~4x the completions), "
            f"{p['total_ms']:.0f} ms of operator self time; the top operators:",
            "",
            "| operator | self ms | share | calls |",
            "|---|---|---|---|",
        ]
        out += [
            f"| `{e['op']}` | {e['self_ms']:.1f} | {100 * e['share']:.1f}% | {e['calls']} |" for e in p["top"]
        ]
        matmul = sum(
            e["share"]
            for e in p["top"]
            if e["op"] in ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm")
        )
        out += [
            "",
            f"Matrix multiplies take {100 * matmul:.0f}% of the operator time: the step is compute-bound in the",
            "model's own layers, not in alignkit's Python (collation, loss, metrics do not appear among the top",
            "operators). The compute that can go is the repeated prompt: each of the K rows of a list runs",
            "the prompt through every layer again, in the policy and in the reference. That is what",
            "`share_prompt=True` removes (table above). On a CPU TRL's fused LM head also scores every",
            "position, prompt positions included (it drops masked positions only on Triton devices); with",
            "this model's vocabulary (1024) that is a small share and was left as is.",
            "",
        ]
    return "\n".join(out) + "\n"


def reference_md(r: dict) -> list[str]:
    out = [
        "## Reference modes (NPO)",
        "",
        "Precomputed reference vs online, step time (`scripts/bench_reference.py`'s stepping, same batches):",
        "",
        "| setup | precomputed / online step | saving | reference-forward share of the online step | saving / share (target >= 0.95) |",
        "|---|---|---|---|---|",
    ]
    for t in r["timing"]:
        saving = 1 - t["ratio"]
        out.append(
            f"| {t['label']} (online: {t['modes'][0]}) | {t['ratio']:.3f} (IQR {t['ratio_iqr'][0]:.3f}-{t['ratio_iqr'][1]:.3f}) "
            f"| {100 * saving:.1f}% | {100 * t['ref_share']:.1f}% | {saving / t['ref_share']:.2f} |"
        )
    peaks = {case: statistics.median(x["peak_mb"] for x in runs) for case, runs in r["memory"].items()}
    sft = peaks["lora_finetune"]
    out += [
        "",
        "Peak memory above the process baseline (each case its own process; LoRA r=8 on q/v):",
        "",
        "| case | peak MB | / LoRA SFT |",
        "|---|---|---|",
    ]
    out += [f"| {case} | {mb:.1f} | {mb / sft:.2f} |" for case, mb in peaks.items()]
    out += ["", "Target: adapter-off reference (`lora_npo_adapter_off`) <= 1.15x LoRA SFT.", ""]
    return out


def sampling_md(r: dict) -> list[str]:
    out = [
        "## D²O sampling throughput (`alignkit.sampling`)",
        "",
        f"{r['prompts']} prompts x K=4 completions, 24 new tokens, plain `generate` on the benchmark model:",
        "",
        "| prompts per `generate` call | completions/s | `generate` calls | seconds |",
        "|---|---|---|---|",
    ]
    for b in (1, 16, 64):
        x = r[b]
        out.append(
            f"| {b} | {x['completions_per_second']:.1f} | {x['generate_calls']} | {x['seconds']:.1f} |"
        )
    out += [
        "",
        f"Identical samples at every batch size: {'yes' if r['same_samples'] else 'NO'} (noise is seeded per "
        "prompt and sample, so batching changes the speed, never the draw).",
        "",
    ]
    return out


def tofu_md(r: dict) -> list[str]:
    if "skipped" in r:
        return ["## TOFU evaluation", "", f"Skipped: {r['skipped']}.", ""]
    import bench_tofu_eval

    out = [
        "## TOFU forget10 evaluation (tiny model)",
        "",
        f"Wall time {r['wall_s']:.1f} s ({r['threads']} thread), by stage:",
        "",
        "| stage | seconds | share |",
        "|---|---|---|",
    ]
    out += [f"| {name} | {sec:.2f} | {100 * sec / r['wall_s']:.0f}% |" for name, sec in r["stages"].items()]
    out += ["", "| forwards | count |", "|---|---|"]
    out += [f"| {name} | {value} |" for name, value in bench_tofu_eval.forward_counts(r)]
    out.append("")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Few steps: a smoke run (minutes), not for the doc.")
    ap.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"Comma-separated, of {', '.join(SECTIONS)}."
    )
    ap.add_argument("--steps", type=int, help="Steps per side of each ratio (default 30; quick 6).")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    ap.add_argument("--json", type=Path, help="Also write the raw numbers here.")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"--sections: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")

    from rich.console import Console

    from alignkit.models import build_tiny_model

    torch.set_num_threads(1)
    bench_reference._quiet()
    console = Console(width=160)
    start, load_before = time.perf_counter(), os.getloadavg()
    steps = args.steps or (6 if args.quick else 30)
    data = make_data()
    texts = [v for r in data["pairs"] for v in (r["prompt"], r["chosen"], r["rejected"])]
    texts += [t for r in data["long_lists"][60] for t in (r["prompt"], *r["completions"])]
    texts += bench_reference._data(20)[1]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(texts, Path(tmp) / "model", seed=0, **bench_reference.MODEL_SIZE)
        ctx = {
            "tmp": tmp,
            "model_dir": model_dir,
            "data": data,
            "steps": steps,
            "warmup": 2,
            "fwd_repeats": 5 if args.quick else 11,
            "mem_repeats": 1 if args.quick else 2,
        }
        for name in sections:
            t = time.perf_counter()
            console.print(f"[bold]{name}[/] ...")
            results[name] = RUNNERS[name](ctx)
            console.print(f"  done in {time.perf_counter() - t:.0f} s: {results[name].get('line', '')}")
    size = bench_reference.MODEL_SIZE
    meta = {
        "command": "python "
        + " ".join(
            [
                str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute() else sys.argv[0],
                *(argv or sys.argv[1:]),
            ]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.perf_counter() - start,
        "machine": machine(),
        "load_before": " / ".join(f"{x:.1f}" for x in load_before),
        "load_after": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "versions": versions(),
        "model": f"Llama, hidden {size['hidden_size']}, {size['num_hidden_layers']} layers, vocab {size['vocab_size']}, float32, CPU",
    }
    from alignkit.trainers.registry import METHODS

    if "d2o" not in METHODS:
        meta["missing"] = (
            "D²O sampling throughput with and without batching (no sampler/D²O in this checkout)."
        )
    doc = markdown(results, meta)
    args.out.write_text(doc)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    console.print(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
