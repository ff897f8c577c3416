"""The GPU items of issue 25, prepared to run in one short device session (~8 minutes of an H100/H200).

Sections (``--sections``, in this order; each skips with a one-line reason where what it needs is absent):

* ``mfu``: a Llama-3.2-1B-shaped model (hidden 2048, 16 layers, 32 heads / 8 KV heads, intermediate
  8192, vocabulary 128,256, tied embeddings: 1.24B parameters, the shape of the smallest Llama-3 users
  fine-tune; the 128k head is 21% of the weights, as in the real model), built from a config, full
  fine-tuning through alignkit's own path: the ``finetune`` trainer's ``training_step`` (collator,
  forward, fused LM head, NLL) + fused AdamW, bf16 autocast over fp32 master weights (``bf16=True``, as
  users run it). Tokens/s and MFU = model FLOPs (``train_flops``) / step time / the GPU's dense bf16
  peak (``PEAK_BF16_TFLOPS``). Target: MFU >= 40%.
* ``dpo_vocab``: ``scripts/bench_vocab.py``'s comparison at vocabulary 128,256 on the GPU: alignkit
  ``dpo`` vs TRL ``DPOTrainer`` with ``use_liger_kernel`` off and on (this TRL applies Liger's layer
  kernels only; its own fused LM head replaces Liger's fused cross-entropy), the same batches, steps
  rotated (A B C, B C A, ...), first losses compared, step time and peak CUDA memory per step. The
  model is Llama-3.2-1B's width with 4 layers (so three trainers fit one GPU). Target: alignkit <= 0.8x
  the faster TRL.
* ``distributed``: ``alignkit train`` of a shipped recipe (recipes/synthetic_alignment/
  graded_list_dpo.yaml, its tiny model built on the spot) under ``--accelerate_config zero3`` and
  ``fsdp2`` on every visible GPU: it must finish with a finite, falling loss. On one GPU this checks
  the code path, not scaling.
* ``vllm``: D²O's draw (``sample_prompts``) with the vLLM backend against ``generate``, the same
  prompts and settings, rounds alternated: samples/s.

``--device cpu`` (``--tiny`` sets it) runs every section's code at toy sizes on this machine, skipping
what needs CUDA, Liger or vLLM with the reason; tests/test_bench_gpu.py runs it. ``--budget-s`` bounds
the whole run: each section gets a share, stops early with what it has, and the JSON is written after
every section. The device command (with what to carry) is in docs/performance.md, "GPU checks".

    python scripts/bench_gpu.py --budget-s 480 --json $OUT/gpu.json
    python scripts/bench_gpu.py --tiny --json /tmp/gpu_tiny.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench  # noqa: E402  (scripts/: Stepper, spread, fmt_ratio)
import torch  # noqa: E402

SECTIONS = ("mfu", "dpo_vocab", "distributed", "vllm")
# Each section's share of --budget-s (the rest of the budget carries over to the next section).
SHARE = {"mfu": 0.25, "dpo_vocab": 0.35, "distributed": 0.25, "vllm": 0.15}
OPTIONAL = ("trl", "deepspeed", "liger_kernel", "vllm", "flash_attn")

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's H100 and H200 datasheets (the
# datasheets print the 2:4-sparse figure, twice these). Matched in order against get_device_name():
# "NVIDIA H100 80GB HBM3" is the SXM part.
PEAK_BF16_TFLOPS = (
    ("H200 NVL", 835.5),
    ("H200", 989.5),
    ("H100 NVL", 835.5),
    ("H100 PCIe", 756.5),
    ("H100", 989.5),
)

LLAMA_1B = dict(
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
    num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
)  # fmt: skip
TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=1024, tie_word_embeddings=True,
)  # fmt: skip
MFU_TARGET, DPO_TARGET = 0.40, 0.8


# --------------------------------------------------------------------------- FLOPs and peaks


def matmul_params(cfg) -> int:
    """Weights that take part in a matrix product per token: every linear layer and the LM head (the
    input embedding is a lookup, the norms elementwise)."""
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    attn = 2 * h * cfg.num_attention_heads * head_dim + 2 * h * cfg.num_key_value_heads * head_dim
    return layers * (attn + 3 * h * cfg.intermediate_size) + h * cfg.vocab_size


def train_flops(cfg, batch: int, seq: int, head_tokens: int | None = None) -> float:
    """Model FLOPs of one training step (forward + backward) on ``batch`` sequences of ``seq`` tokens.

    6 FLOPs per matmul weight per token (2 forward, 4 backward), plus attention's two products per
    layer, ``QK^T`` and ``AV``: 2 x 2 x seq x heads x head_dim per token forward, x3 with the backward
    (the 12·L·H·Q·T term of PaLM's appendix B; counted over the full square, as the papers and
    FlopCounterMode do, though a causal kernel skips half). ``head_tokens``: positions whose logits
    are computed (alignkit's head skips unscored prompt tokens); all of them by default.
    """
    tokens = batch * seq
    head_tokens = tokens if head_tokens is None else head_tokens
    head = cfg.hidden_size * cfg.vocab_size
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * seq * tokens
    return 6 * (matmul_params(cfg) - head) * tokens + 6 * head * head_tokens + attention


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


# --------------------------------------------------------------------------- environment


def detect() -> dict:
    """What this machine has: CUDA and its device, and the optional packages (version or None)."""
    cuda = torch.cuda.is_available()
    found = {}
    for name in OPTIONAL:
        if importlib.util.find_spec(name) is None:
            found[name] = None
            continue
        try:
            found[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            found[name] = "present"
    return {
        "cuda": cuda,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "gpus": torch.cuda.device_count() if cuda else 0,
        "packages": found,
        "versions": versions(),
    }


def versions() -> dict:
    try:
        return bench.versions()
    except ImportError as error:  # alignkit's own dependencies: the sections will fail with it too
        return {"error": str(error)}


class Budget:
    """The run's time guard: each section may spend its share of what is left."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def section(self, name: str, remaining: list[str]) -> float:
        shares = sum(SHARE[s] for s in remaining)
        return self.left() * SHARE[name] / shares


def skip(reason: str) -> dict:
    return {"skipped": reason}


def device_args(device: str) -> dict:
    """Training arguments for the device: bf16 autocast over fp32 weights on CUDA, fp32 on CPU."""
    return {"use_cpu": device == "cpu", "bf16": device == "cuda"}


def timed_steps(stepper, deadline: float, max_steps: int) -> list[float]:
    """Step until ``max_steps`` or the deadline (at least 2 steps: one warm-up, one timed)."""
    times = []
    while len(times) < max_steps and (len(times) < 2 or time.monotonic() < deadline):
        times.append(stepper.step(len(times) % len(stepper.batches)))
    return times


# --------------------------------------------------------------------------- mfu


def text_rows(count: int, seq: int, seed: int = 0) -> list[dict]:
    """``count`` rows whose prompt and completion hold at least ``seq`` tokens (cut to ``seq`` by ``max_length``)."""
    import random

    rng = random.Random(seed)
    words = [f"w{rng.randrange(10**6)}" for _ in range(4000)]
    rows = []
    for _ in range(count):
        text = " ".join(rng.choice(words) for _ in range(seq))  # every word is >= 1 token
        rows.append({"prompt": "Continue:", "completion": text})
    return rows


def build_config_model(out: Path, size: dict, texts: list[str]) -> Path:
    """A Llama of ``size`` (random weights, fp32), with a tokenizer trained on ``texts``, saved to ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignkit.models.tiny import train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=min(size["vocab_size"], 2000))
    config = LlamaConfig(
        **size, max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def mfu(ctx, seconds: float) -> dict:
    size, wanted, seq = (TINY, 2, 64) if ctx["tiny"] else (LLAMA_1B, ctx["mfu_batch"], ctx["mfu_seq"])
    deadline = time.monotonic() + seconds
    with tempfile.TemporaryDirectory() as tmp:
        rows = text_rows(wanted * 2, seq)
        model_dir = build_config_model(Path(tmp) / "model", size, [r["completion"] for r in rows])
        halved = dict.fromkeys(max(1, wanted >> k) for k in range(3))  # while the activations do not fit
        for batch in halved:
            try:
                times, cfg, (tokens, scored) = finetune_steps(ctx, model_dir, rows, batch, seq, deadline)
                break
            except torch.cuda.OutOfMemoryError:
                pass  # leaving the except block frees the failed attempt's tensors
            gc.collect()
            torch.cuda.empty_cache()
        else:
            return skip(f"CUDA out of memory at batch {batch} x {seq} tokens")
    flops = train_flops(cfg, batch, seq, head_tokens=scored)
    step = bench.spread(times, key="median")
    peak = peak_tflops(ctx["device_name"]) if ctx["device"] == "cuda" else None
    res = {
        "model": {k: size[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")},
        "matmul_params": matmul_params(cfg), "batch": batch, "seq": seq, "tokens_per_step": tokens,
        "scored_tokens_per_step": scored, "step_s": step, "tokens_per_s": tokens / step["median"],
        "model_tflops_per_step": flops / 1e12, "achieved_tflops": flops / step["median"] / 1e12,
        "peak_tflops": peak, "rows_full": tokens == batch * seq,  # no padding: the formula's batch x seq
    }  # fmt: skip
    if peak is None:
        res["mfu"] = None
        res["note"] = f"MFU not computed: no bf16 peak known for {ctx['device_name']!r}"
    else:
        res["mfu"] = res["achieved_tflops"] / peak
        res["mfu_iqr"] = [flops / t / 1e12 / peak for t in (step["q3"], step["q1"])]
    return res


def finetune_steps(ctx, model_dir: Path, rows: list[dict], batch: int, seq: int, deadline: float):
    """``finetune`` steps (training_step + fused AdamW) until the deadline: step times without the first
    (kernel selection, allocation), the model config, and the tokens of a batch."""
    stepper = bench.ours(
        "finetune", model_dir, rows, model_dir.parent / "run", batch, 2, device_args(ctx["device"]),
        ref_mode="none", max_length=seq,
    )  # fmt: skip
    import bench_vocab  # its fused AdamW, both trainers' configs' default

    times = timed_steps(bench_vocab.fused_adamw(stepper), deadline, ctx["max_steps"])
    return times[1:], stepper.model.config, count_tokens(stepper.batches[0])


def count_tokens(batch: dict) -> tuple[int, int]:
    """Tokens in a collated batch, and those whose logits the head computes (completion tokens + 1)."""
    attention = batch["attention_mask"]
    tokens = int(attention.sum())
    for key in ("completion_mask", "loss_mask", "labels_mask"):
        if key in batch:
            return tokens, int(batch[key].sum())
    return tokens, tokens


# --------------------------------------------------------------------------- dpo_vocab


def dpo_vocab(ctx, seconds: float) -> dict:
    import bench_vocab

    if not bench_vocab.TOFU.exists():
        return skip(
            f"{bench_vocab.TOFU} is absent (set BENCH_TOFU to a copy of TOFU's forget10_perturbed.json)"
        )
    if ctx["tiny"]:
        vocab, profiles, width = 2000, ["short"], bench_vocab.MODEL_SIZE
    else:  # Llama-3.2-1B's width, 4 layers; a GPU's batches: 32 TOFU pairs, 8 chat-length (CPU runs: 8 and 2)
        vocab, profiles = 128256, ["short", "chat"]
        width = {**{k: LLAMA_1B[k] for k in bench_vocab.MODEL_SIZE}, "num_hidden_layers": 4}
        bench_vocab.BATCH.update(short=32, chat=8)
    liger = bool(ctx["packages"]["liger_kernel"]) and ctx["device"] == "cuda"
    out = {"vocab": vocab, "model": width}
    if not liger:
        why = (
            "Liger's kernels need CUDA"
            if ctx["packages"]["liger_kernel"]
            else "liger_kernel is not installed"
        )
        out["liger"] = f"TRL with Liger not run: {why}"
    deadline = time.monotonic() + seconds
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = bench_vocab.build_model(Path(tmp) / "models", vocab, **width)
        for profile in profiles:
            left = deadline - time.monotonic()
            if left <= 0:
                out[profile] = skip("out of time")
                continue
            try:
                out[profile] = dpo_profile(ctx, model_dir, profile, liger, Path(tmp) / profile, left / 2)
            except torch.cuda.OutOfMemoryError as error:
                out[profile] = skip(f"CUDA out of memory: {str(error).splitlines()[0]}")
            if ctx["device"] == "cuda":
                torch.cuda.empty_cache()
    return out


def dpo_profile(ctx, model_dir: Path, profile: str, liger: bool, tmp: Path, seconds: float) -> dict:
    import bench_vocab

    rows, args = bench_vocab.make_rows(profile), device_args(ctx["device"])
    steps = ctx["max_steps"]
    sides = {
        "ours": bench_vocab.ours(model_dir, rows, tmp / "ours", steps, **args),
        "trl": bench_vocab.trl(model_dir, rows, tmp / "trl", steps, **args),
    }
    if liger:
        sides["trl_liger"] = bench_vocab.trl(
            model_dir, rows, tmp / "liger", steps, **args, use_liger_kernel=True
        )
    for stepper in sides.values():
        bench_vocab.move_policy(stepper)
    losses = {name: bench_vocab.first_loss(s) for name, s in sides.items()}
    times, memory = rotate(sides, time.monotonic() + seconds, steps)
    res = {"pairs": len(rows), "loss": losses, "loss_tolerance": LOSS_TOL[ctx["device"]]}
    res["loss_match"] = all(abs(v - losses["ours"]) <= res["loss_tolerance"] for v in losses.values())
    res["step_s"] = {name: statistics.median(t[1:]) for name, t in times.items()}
    res["peak_step_mb"] = memory
    for name in sides.keys() - {"ours"}:
        res[f"ours/{name}"] = bench.spread([a / b for a, b in zip(times["ours"][1:], times[name][1:])])
    faster = min((n for n in sides if n != "ours"), key=lambda n: res["step_s"][n])
    res["vs_faster_trl"] = {"side": faster, **res[f"ours/{faster}"]}
    return res


LOSS_TOL = {"cpu": 1e-6, "cuda": 2e-2}  # fp32 on CPU; bf16 autocast on CUDA rounds each side differently


def rotate(sides: dict, deadline: float, max_steps: int) -> tuple[dict, dict]:
    """Step every side in turn, the order rotated each round (A B C, B C A, ...); per-step times, and on
    CUDA each side's median peak memory above its pre-step allocation (MB)."""
    names = list(sides)
    times, memory = {n: [] for n in names}, {n: [] for n in names}
    cuda = next(iter(sides.values())).model.device.type == "cuda"
    i = 0
    while i < max_steps and (i < 2 or time.monotonic() < deadline):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            times[name].append(sides[name].step(i % len(sides[name].batches)))
            if cuda:
                memory[name].append((torch.cuda.max_memory_allocated() - before) / 2**20)
        i += 1
    return times, {n: statistics.median(m) for n, m in memory.items()} if cuda else None


# --------------------------------------------------------------------------- distributed

RECIPE = ROOT / "recipes" / "synthetic_alignment" / "graded_list_dpo.yaml"


def distributed(ctx, seconds: float) -> dict:
    configs = ctx["dist_configs"]
    out = {
        "gpus": ctx["gpus"],
        "note": "one GPU checks the code path, not scaling" if ctx["gpus"] == 1 else None,
    }
    deadline = time.monotonic() + seconds
    for i, config in enumerate(configs):
        reason = launch_blocker(ctx, config)
        left = (deadline - time.monotonic()) / (len(configs) - i)
        out[config] = (
            skip(reason) if reason else skip("out of time") if left < 20 else launch(ctx, config, left)
        )
    return out


def launch_blocker(ctx, config: str) -> str | None:
    if config.startswith("zero") and not ctx["packages"]["deepspeed"]:
        return "deepspeed is not installed"
    if config == "fsdp2" and ctx["device"] != "cuda":
        return "FSDP does not run on CPU (accelerate falls back to DDP)"
    if config.startswith("zero") and ctx["device"] != "cuda":
        return "ZeRO-3 on CPU needs DeepSpeed's CPU ops built (minutes): tests/distributed covers it"
    return None


def launch(ctx, config: str, seconds: float) -> dict:
    """``alignkit train RECIPE --accelerate_config CONFIG`` for a few steps; its loss curve from run_info.json."""
    steps = 6 if ctx["tiny"] else 40
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "alignkit.cli", "train", str(RECIPE), "--accelerate_config", config,
            "--num_processes", str(max(ctx["gpus"], 1)), "--max_steps", str(steps), "--logging_steps", "1",
            "--output_dir", tmp, "--disable_tqdm", "true", "--save_strategy", "no",
        ]  # fmt: skip
        if ctx["device"] == "cpu":
            cmd += ["--mixed_precision", "no"]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        start = time.monotonic()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return skip(f"did not finish in {seconds:.0f} s")
        wall = time.monotonic() - start
        info = Path(tmp) / "run_info.json"
        if done.returncode or not info.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return {"ok": False, "returncode": done.returncode, "wall_s": wall, "error": " | ".join(tail)}
        curve = [loss for _, loss in json.loads(info.read_text())["train"]["loss_curve"]]
    third = max(1, len(curve) // 3)
    first, last = statistics.mean(curve[:third]), statistics.mean(curve[-third:])
    finite = all(math.isfinite(x) for x in curve)
    return {
        "ok": finite and last < first, "steps": len(curve), "wall_s": wall, "finite": finite,
        "loss_first_third": first, "loss_last_third": last, "command": " ".join(cmd[1:]),
    }  # fmt: skip


# --------------------------------------------------------------------------- vllm


def vllm(ctx, seconds: float) -> dict:
    """D²O's draw through ``sample_prompts``: vLLM against ``generate``. Without vLLM (or CUDA) the
    ``generate`` side alone runs in ``--tiny`` mode (so the code is exercised), and is skipped otherwise."""
    missing = (
        "vLLM needs CUDA"
        if ctx["device"] != "cuda"
        else None
        if ctx["packages"]["vllm"]
        else "vllm is not installed"
    )
    if missing and not ctx["tiny"]:
        return skip(missing)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.data.synthetic.preference import recommendation_task
    from alignkit.sampling import GenerateBackend, VLLMBackend, sample_prompts
    from alignkit.trainers.d2o import D2OConfig

    num_users, size = (
        (8, TINY) if ctx["tiny"] else (64, {**{k: LLAMA_1B[k] for k in TINY}, "num_hidden_layers": 4})
    )
    prompts = [r["prompt"] for r in recommendation_task(num_users=num_users, num_negatives=1, seed=0).records]
    deadline = time.monotonic() + seconds
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_config_model(Path(tmp) / "model", size, prompts)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dtype = torch.bfloat16 if ctx["device"] == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(ctx["device"])
        ids = [tokenizer(p)["input_ids"] for p in prompts]
        d2o = D2OConfig(output_dir=tmp, report_to="none")  # D²O's own draw settings, bigger batches
        settings = dataclasses.replace(d2o.sampling_settings(), batch_size=64)
        if ctx["tiny"]:
            settings = dataclasses.replace(settings, num_samples=2, max_new_tokens=8)
        start = time.monotonic()
        backends = {"generate": GenerateBackend()}
        if not missing:
            backends["vllm"] = VLLMBackend(str(model_dir), dtype="bfloat16", gpu_memory_utilization=0.3)
        startup = time.monotonic() - start
        seconds_by = {name: [] for name in backends}
        i = 0
        while i < 4 and (i < 2 or time.monotonic() < deadline):
            for name in list(backends) if i % 2 == 0 else list(backends)[::-1]:
                result = sample_prompts(
                    model, tokenizer, ids, settings, backend=backends[name], show_progress=False
                )
                seconds_by[name].append(result.seconds)
            i += 1
    samples = len(ids) * settings.num_samples
    res = {
        "prompts": len(ids), "samples_per_round": samples, "max_new_tokens": settings.max_new_tokens,
        "samples_per_s": {name: samples / statistics.median(s) for name, s in seconds_by.items()},
    }  # fmt: skip
    if missing:
        res["vllm"] = f"not run: {missing}"
    else:
        ratios = [g / v for g, v in zip(seconds_by["generate"], seconds_by["vllm"])]
        res.update(vllm_speedup=bench.spread(ratios), vllm_startup_s=startup)
    return res


RUNNERS = {"mfu": mfu, "dpo_vocab": dpo_vocab, "distributed": distributed, "vllm": vllm}


# --------------------------------------------------------------------------- report


def summary(res: dict) -> list[tuple[str, str, str]]:
    """(check, result, target) rows of the markdown table."""
    rows = []
    m = res.get("mfu", {})
    if "skipped" in m or "error" in m:
        rows.append(("mfu", m.get("skipped") or m["error"], f"MFU >= {MFU_TARGET:.0%}"))
    elif m:
        mfu_text = f"MFU {m['mfu']:.1%}" if m["mfu"] is not None else m["note"]
        rows.append(("mfu", f"{m['tokens_per_s']:,.0f} tokens/s, {m['achieved_tflops']:.1f} TFLOP/s; {mfu_text}",
                     f"MFU >= {MFU_TARGET:.0%}"))  # fmt: skip
    d = res.get("dpo_vocab", {})
    for profile in ("short", "chat"):
        r = d.get(profile)
        if r is None:
            continue
        if "skipped" in r:
            rows.append((f"dpo_vocab {profile}", r["skipped"], f"<= {DPO_TARGET}x the faster TRL"))
            continue
        v = r["vs_faster_trl"]
        mem = r["peak_step_mb"]
        mem_text = "; peak MB " + ", ".join(f"{k} {x:.0f}" for k, x in mem.items()) if mem else ""
        rows.append((f"dpo_vocab {profile} (vocab {d['vocab']:,})",
                     f"ours/{v['side']} {bench.fmt_ratio(v)}; loss match {r['loss_match']}{mem_text}",
                     f"<= {DPO_TARGET}x the faster TRL"))  # fmt: skip
    if d.get("liger"):
        rows.append(("dpo_vocab liger", d["liger"], ""))
    if "skipped" in d:
        rows.append(("dpo_vocab", d["skipped"], f"<= {DPO_TARGET}x the faster TRL"))
    for config, r in res.get("distributed", {}).items():
        if isinstance(r, dict):
            text = r.get("skipped") or r.get("error") or (
                f"ok {r['ok']}: loss {r['loss_first_third']:.4f} -> {r['loss_last_third']:.4f} over {r['steps']} "
                f"steps, {r['wall_s']:.0f} s")  # fmt: skip
            rows.append((f"distributed {config}", text, "finishes, loss finite and falling"))
    v = res.get("vllm", {})
    if v:
        text = v.get("skipped") or v.get("error")
        if text is None and "vllm" in v:
            text = f"generate {v['samples_per_s']['generate']:.1f} samples/s; vLLM {v['vllm']}"
        elif text is None:
            text = (f"{v['samples_per_s']['vllm']:.0f} vs {v['samples_per_s']['generate']:.0f} samples/s, "
                    f"vLLM/generate speed-up {bench.fmt_ratio(v['vllm_speedup'])}")  # fmt: skip
        rows.append(("vllm", text, "measured (no target)"))
    return rows


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"device: {env['device_name']} ({env['gpus']} GPUs); packages: "
             + ", ".join(f"{k} {v or 'absent'}" for k, v in env["packages"].items()), "",
             "| check | result | target |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {a} | {b} | {c} |" for a, b, c in summary(res)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS)
    )
    parser.add_argument("--budget-s", type=float, default=480, help="the whole run's time (default 480)")
    parser.add_argument("--json", help="where to write the results (after every section)")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda where available")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (and --device cpu unless given)")
    parser.add_argument("--max-steps", type=int, default=30, help="timed steps per side, at most")
    parser.add_argument("--mfu-batch", type=int, default=8)
    parser.add_argument("--mfu-seq", type=int, default=2048)
    parser.add_argument("--dist-configs", default="zero3,fsdp2", help="accelerate configs for `distributed`")
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(
            f"error: --sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}",
            file=sys.stderr,
        )
        return 2
    env = detect()
    device = args.device or ("cpu" if args.tiny or not env["cuda"] else "cuda")
    if device == "cuda" and not env["cuda"]:
        print("error: --device cuda: torch sees no CUDA device; use --device cpu --tiny", file=sys.stderr)
        return 2
    if device == "cpu":
        torch.set_num_threads(1)
    ctx = {**env, "device": device, "tiny": args.tiny or device == "cpu", "max_steps": args.max_steps,
           "mfu_batch": args.mfu_batch, "mfu_seq": args.mfu_seq, "dist_configs": args.dist_configs.split(",")}  # fmt: skip
    if ctx["tiny"]:
        ctx["max_steps"] = min(ctx["max_steps"], 4)
    res = {
        "environment": env,
        "device": device,
        "tiny": ctx["tiny"],
        "budget_s": args.budget_s,
        "load": os.getloadavg(),
    }
    budget = Budget(args.budget_s)
    for i, name in enumerate(sections):
        start = time.monotonic()
        try:
            res[name] = RUNNERS[name](ctx, budget.section(name, sections[i:]))
        except Exception as error:  # a broken section must not lose the others' results
            res[name] = {"error": f"{type(error).__name__}: {error}"[:500]}
        res[name]["section_s"] = round(time.monotonic() - start, 1)
        if device == "cuda":  # hand the cached blocks back (vLLM sizes its cache by the free memory)
            torch.cuda.empty_cache()
        print(f"{name}: {json.dumps(res[name])[:400]}", flush=True)
        res["load_after"] = os.getloadavg()
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
