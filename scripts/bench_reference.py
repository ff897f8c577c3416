"""What the reference modes cost: step time of online vs precomputed reference, memory of adapter-off.

On one tiny Llama-shaped model (hidden 256, 4 layers: big enough that a forward dominates the
Python overhead on a CPU) and the same batches (synthetic TOFU forget10 rows, same seed):

1. **Time.** NPO with an online reference (``ref_mode="model"``: a frozen copy, one extra forward
   per step) vs the precomputed cache (``ref_mode="precomputed"``: one pass before training, no
   reference forward while training); and the same with LoRA (``adapter_off`` vs precomputed) for
   context. Both trainers of a pair live in one process and take their steps in turn (A B, B A,
   ...) on the same batches, so each step's ratio is measured under the same machine load; the
   median ratio over steps is reported. A step is the trainer's ``compute_loss`` (its forward and
   reference path) + backward + AdamW step. Target: <= 0.70x.
2. **Memory.** With LoRA, NPO's adapter-off reference (no second copy of the base model) vs plain
   LoRA SFT (``finetune``), and, for contrast, NPO with a full frozen copy (``ref_mode="model"``).
   Each case runs in its own subprocess; the number is the peak RSS above the process's RSS
   before the model was loaded (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``), so the
   ~0.5 GB of imported libraries does not dilute the ratio. Target: adapter-off <= 1.15x SFT.

Timings on a shared machine are noisy: compare the ratios, which are measured side by side.

Run: ``python scripts/bench_reference.py [--quick] [--threads 1] [--steps N] [--mem-repeats R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

MODEL_SIZE = dict(
    vocab_size=1024,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
)
MEMORY_CASES = {
    "lora_finetune": ("finetune", "auto"),
    "lora_npo_adapter_off": ("npo", "auto"),
    "lora_npo_model_copy": ("npo", "model"),
}


def _quiet():
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' checkpointing rename

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("alignkit").setLevel(logging.ERROR)


def _data(num_people: int) -> tuple[list[dict], list[str]]:
    from alignkit.data.synthetic.tofu import build_tofu_files

    files = build_tofu_files(num_people=num_people, seed=0)
    texts = [v for row in files["full.json"] for v in (row["question"], row["answer"])]
    return files["forget10.json"], texts


def _silence(trainer):
    """No per-log print lines (``disable_tqdm`` swaps the progress bar for a printer)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _args(spec, output_dir, *, steps: int, batch_size: int, **overrides):
    return spec.make_config(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-4,
        logging_steps=steps,
        save_strategy="no",
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        **overrides,
    )


# --------------------------------------------------------------------------- time


class ForwardCounter:
    """Counts forwards of the given modules and times those run without grad (the reference's)."""

    def __init__(self, *modules):
        self.calls, self.ref_seconds, self._start = 0, 0.0, 0.0
        for m in modules:
            if m is not None:
                m.register_forward_pre_hook(self._begin)
                m.register_forward_hook(self._end)

    def _begin(self, module, args):
        self.calls += 1
        self._start = time.perf_counter()

    def _end(self, module, args, output):
        if not torch.is_grad_enabled():
            self.ref_seconds += time.perf_counter() - self._start


# (label, online ref_mode, LoRA?): each online mode is timed against the precomputed cache.
TIME_PAIRS = [("full fine-tuning", "model", False), ("LoRA r=8", "adapter_off", True)]


class Runner:
    """One NPO trainer driven step by step: ``compute_loss`` (the trainer's own forward and
    reference path), backward, AdamW step. The Trainer loop around it is the same in every mode."""

    def __init__(self, model_dir, tokenizer, rows, mode, lora, out, cache_dir, batches):
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM

        from alignkit import get_method

        spec = get_method("npo")
        lora_config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        args = _args(
            spec,
            Path(out) / mode,
            steps=len(batches),
            batch_size=len(batches[0]),
            ref_mode=mode,
            ref_cache_dir=str(cache_dir),
        )
        t = time.perf_counter()
        self.trainer = spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=args,
            train_dataset=rows,
            processing_class=tokenizer,
            peft_config=lora_config if lora else None,
        )
        self.build_s = time.perf_counter() - t
        trainer = self.trainer
        self.batches = [
            trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in idx]))
            for idx in batches
        ]
        self.model = trainer.model
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4)
        self.counter = ForwardCounter(trainer.model, trainer.ref_model)

    def step(self, i: int) -> float:
        t = time.perf_counter()
        loss = self.trainer.compute_loss(self.model, self.batches[i])
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t


def bench_time(model_dir, rows, cache_dir, *, steps, warmup, batch_size, pairs) -> list[dict]:
    """Both modes of a pair step in turn (A B, B A, ...) on the same batches: each step's ratio is
    measured under the same machine load, and the median over steps is reported."""
    import random

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(0)
    batches = [rng.sample(range(len(rows)), batch_size) for _ in range(steps)]
    results = []
    for label, online, lora in pairs:
        modes = (online, "precomputed")
        with tempfile.TemporaryDirectory() as out:
            runners = {
                m: Runner(model_dir, tokenizer, rows, m, lora, out, cache_dir / label, batches) for m in modes
            }
            times: dict[str, list[float]] = {m: [] for m in modes}
            for i in range(steps):
                for m in modes if i % 2 == 0 else modes[::-1]:
                    times[m].append(runners[m].step(i))
        kept = {m: v[warmup:] for m, v in times.items()}
        ratios = [p / o for p, o in zip(kept["precomputed"], kept[online])]
        online_total = sum(times[online])
        results.append(
            {
                "label": label,
                "modes": modes,
                "step": {m: statistics.median(v) for m, v in kept.items()},
                "ratio": statistics.median(ratios),
                "ratio_iqr": statistics.quantiles(ratios, n=4)[::2] if len(ratios) > 1 else ratios * 2,
                "forwards": {m: runners[m].counter.calls / steps for m in modes},
                "ref_share": runners[online].counter.ref_seconds / online_total,
                "build": {m: runners[m].build_s for m in modes},
            }
        )
    return results


# --------------------------------------------------------------------------- memory (subprocess)


def _status_kb(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M).group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_worker(
    case: str, model_dir: str, threads: int, steps: int, batch_size: int, num_people: int
) -> dict:
    import gc

    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit import get_method

    torch.set_num_threads(threads)
    _quiet()
    # Modules a Trainer imports on construction (deepspeed when installed: ~30 MB) load before the
    # baseline, so the peak counts the model, its copies, optimizer state and activations only.
    import importlib.util

    for module in ("accelerate", "peft.tuners.lora", "deepspeed"):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            importlib.import_module(module)
    method, ref_mode = MEMORY_CASES[case]
    rows, _ = _data(num_people)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    spec = get_method(method)
    gc.collect()
    reset = _reset_peak()
    base = _status_kb("VmRSS")
    with tempfile.TemporaryDirectory() as out:
        trainer = spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=_args(spec, out, steps=steps, batch_size=batch_size, ref_mode=ref_mode),
            train_dataset=rows,
            processing_class=tokenizer,
            peft_config=LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        )
        _silence(trainer)
        built = _status_kb("VmRSS")
        trainer.train()
        peak = _status_kb("VmHWM")
    return {
        "case": case,
        "ref_mode": trainer.ref_mode,
        "ref_model": trainer.ref_model is not None,
        "base_mb": base / 1024,
        "after_build_mb": (built - base) / 1024,
        "peak_mb": (peak - base) / 1024,
        "process_peak_mb": peak / 1024,
        "peak_reset": reset,
    }


def bench_memory(model_dir, *, threads, steps, repeats, batch_size, num_people) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {case: [] for case in MEMORY_CASES}
    cases = list(MEMORY_CASES)
    for rep in range(repeats):
        for case in cases if rep % 2 == 0 else cases[::-1]:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                case,
                "--model-dir",
                str(model_dir),
                "--threads",
                str(threads),
                "--mem-steps",
                str(steps),
                "--batch-size",
                str(batch_size),
                "--num-people",
                str(num_people),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"memory worker {case} failed:\n{done.stderr[-4000:]}")
            results[case].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Fewer steps and runs (under a minute).")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noisy).")
    ap.add_argument("--steps", type=int, help="Timed steps per mode (default 40; quick 12).")
    ap.add_argument("--mem-repeats", type=int, help="Subprocess runs per memory case (default 2; quick 1).")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-people", type=int, default=20, help="Synthetic TOFU size (forget10 = 10%%).")
    ap.add_argument("--worker", choices=list(MEMORY_CASES), help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--mem-steps", type=int, default=6, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        result = memory_worker(
            args.worker, args.model_dir, args.threads, args.mem_steps, args.batch_size, args.num_people
        )
        print(json.dumps(result))
        return 0

    from rich.console import Console
    from rich.table import Table

    from alignkit.models import build_tiny_model

    torch.set_num_threads(args.threads)
    _quiet()
    steps = args.steps or (12 if args.quick else 40)
    mem_repeats = args.mem_repeats or (1 if args.quick else 2)
    warmup = 2
    if steps <= warmup:
        ap.error(f"--steps must exceed the {warmup} warm-up steps")
    console = Console(width=160)
    rows, texts = _data(args.num_people)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(texts, Path(tmp) / "model", seed=0, **MODEL_SIZE)
        from transformers import AutoModelForCausalLM

        n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
        console.print(
            f"model: Llama hidden {MODEL_SIZE['hidden_size']}, {MODEL_SIZE['num_hidden_layers']} layers, "
            f"vocab {MODEL_SIZE['vocab_size']}, {n_params / 1e6:.2f} M parameters; data: {len(rows)} "
            f"forget rows, batch {args.batch_size}; {torch.get_num_threads()} thread(s)"
        )
        t0 = time.perf_counter()
        timing = bench_time(
            model_dir,
            rows,
            Path(tmp) / "ref_cache",
            steps=steps,
            warmup=warmup,
            batch_size=args.batch_size,
            pairs=TIME_PAIRS,
        )
        time_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        memory = bench_memory(
            model_dir,
            threads=args.threads,
            steps=6,
            repeats=mem_repeats,
            batch_size=args.batch_size,
            num_people=args.num_people,
        )
        memory_s = time.perf_counter() - t0

    # ---- time table
    table = Table(
        title=f"(1) NPO step time, online reference vs precomputed cache: {steps} steps per mode, "
        f"interleaved step by step on the same batches; medians after {warmup} warm-up steps ({time_s:.0f} s)"
    )
    for col in ("setup", "ref_mode", "median step (ms)", "forwards / step", "ref fwd share", "build (s)"):
        table.add_column(col, justify="left" if col in ("setup", "ref_mode") else "right")
    for res in timing:
        online = res["modes"][0]
        for mode in res["modes"]:
            table.add_row(
                res["label"],
                mode,
                f"{1000 * res['step'][mode]:.1f}",
                f"{res['forwards'][mode]:.0f}",
                f"{100 * res['ref_share']:.0f}%" if mode == online else "-",
                f"{res['build'][mode]:.2f}",
            )
        lo, hi = res["ratio_iqr"]
        table.add_row(
            res["label"],
            f"[bold]precomputed / {online}",
            f"[bold]{res['ratio']:.3f}[/] (IQR {lo:.3f}-{hi:.3f})",
            "",
            f"bound {1 - res['ref_share']:.3f}",
            "",
            end_section=True,
        )
    console.print(table)
    headline = timing[0]["ratio"]
    verdict = "[green]meets[/]" if headline <= 0.70 else "[red]misses[/]"
    console.print(
        f"  full fine-tuning, precomputed / online (ref_mode=model): [bold]{headline:.3f}x[/] "
        f"(target <= 0.70x: {verdict}).\n"
        "  A step = the trainer's compute_loss + backward + AdamW step. 'ref fwd share' is the time the "
        "online mode spends in reference forwards, all that precomputing removes: 1 - share bounds the "
        "ratio (a separate reference copy also evicts the policy's weights from cache, so the measured "
        "ratio can come in a little under the bound).\n"
        "  build = trainer construction, which for precomputed includes the one reference pass over "
        "the data (written to the cache)."
    )

    # ---- memory table
    table = Table(
        title=f"(2) LoRA peak memory, one subprocess per run ({mem_repeats} repeat(s), interleaved; {memory_s:.0f} s)"
    )
    for col in (
        "case",
        "ref_mode / ref_model",
        "peak above pre-load RSS (MB), per run",
        "median (MB)",
        "x SFT",
        "process peak RSS (MB)",
    ):
        table.add_column(col, justify="left" if col in ("case", "ref_mode / ref_model") else "right")
    med = {case: statistics.median(r["peak_mb"] for r in runs) for case, runs in memory.items()}
    for case, runs in memory.items():
        table.add_row(
            case,
            f"{runs[0]['ref_mode']} / {'copy' if runs[0]['ref_model'] else 'None'}",
            ", ".join(f"{r['peak_mb']:.1f}" for r in runs),
            f"{med[case]:.1f}",
            f"{med[case] / med['lora_finetune']:.3f}",
            f"{statistics.median(r['process_peak_mb'] for r in runs):.0f}",
        )
    console.print(table)
    mem_ratio = med["lora_npo_adapter_off"] / med["lora_finetune"]
    verdict = "[green]meets[/]" if mem_ratio <= 1.15 else "[red]misses[/]"
    console.print(
        f"  adapter-off NPO / LoRA SFT peak: [bold]{mem_ratio:.3f}x[/] (target <= 1.15x: {verdict})"
    )
    if not all(r["peak_reset"] for runs in memory.values() for r in runs):
        console.print("  [yellow]VmHWM could not be reset: peaks include the import phase[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
