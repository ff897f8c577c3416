"""alignkit `dpo` vs TRL `DPOTrainer` at real vocabularies (32,000 and 128,256), two length profiles.

The model is Llama-shaped (hidden 256, 2 layers, float32, CPU, one torch thread) with the
vocabulary of Llama-2 (32,000) or Llama-3 (128,256); its tokenizer is trained on TOFU (so words
tokenise about as a real BPE does) and the embeddings are resized to the vocabulary. Rows are real
TOFU text (``../shared/data/tofu/forget10_perturbed.json``: question, answer, perturbed answer):

* ``short``: one TOFU item per pair (prompt = question, chosen = answer, rejected = perturbed
  answer): TOFU's own lengths, about 12 question words and 27 answer words on average.
* ``chat``: chat-length answers: prompt = 4 questions, chosen/rejected = 12 answers / perturbed
  answers joined, about 50 prompt words and 320 answer words, the order of a chat preference set's
  responses (UltraFeedback-style). Not a published statistic: these lengths are chosen, and the
  measured token lengths are printed.

Both sides use a precomputed reference (TRL ``precompute_ref_log_probs``, alignkit
``ref_mode=precomputed``), TRL its fastest CPU settings: ``padding_free=True`` (this TRL, 1.16,
falls back to padding with a warning) and ``gradient_checkpointing=False`` (its DPOConfig turns it
on). The hand stepper uses fused AdamW on both sides (``adamw_torch_fused``, both configs' default).
Steps are alternated (A B, B A, ...) on one batch holding every row, so the mean loss is
order-free; both policies get the same seeded nudge off the reference first, and their first losses
must agree to 1e-6. ``--processes R``: each side in its own process instead (shapes whose two
trainers do not fit one process), R rounds with the order alternated, step i paired with step i.
Peak memory: each side in its own process, the increase of the peak resident set over two steps
after the trainer is built. Head share: ``torch.profiler`` over one step, the self time of operators
with a vocabulary-sized input dimension over the total.

    python scripts/bench_vocab.py [--vocabs 32000,128256] [--profiles short,chat] [--steps 8]
    python scripts/bench_vocab.py --vocabs 128256 --profiles chat --chat-pairs 2 --processes 3
    python scripts/bench_vocab.py --vocabs 128256 --profiles short --chunk-cost  # kept vs recomputed
    python scripts/bench_vocab.py --vocabs 128256 --lipo 1   # LiPO K=4 relations/s vs TRL DPO

Absolute times depend on the machine and its load; the ratios of alternated steps are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench  # noqa: E402  (scripts/: Stepper, alternate, fmt_ratio)
import torch  # noqa: E402

# BENCH_TOFU: another copy of the file (the device machine of bench_gpu.py sees only what is carried).
TOFU = Path(
    os.environ.get("BENCH_TOFU", ROOT.parent / "shared" / "data" / "tofu" / "forget10_perturbed.json")
)
MAX_LENGTH = 1024  # both sides: no row of either profile is cut (alignkit's default is 512, TRL's 1024)
# Pairs per step. chat: the TRL side's logits must fit a 3 GB budget; at 128,256 two pairs took the
# process (both trainers) to 4.4 GB resident, so `--chat-pairs 1` (passed to the memory children too).
BATCH = {"short": 8, "chat": int(os.environ.get("BENCH_VOCAB_CHAT_PAIRS", "2"))}


def tofu_rows() -> list[dict]:
    return [json.loads(line) for line in TOFU.read_text().splitlines() if line.strip()]


def make_rows(profile: str) -> list[dict]:
    items = tofu_rows()
    if profile == "short":
        return [
            {"prompt": r["question"], "chosen": r["answer"], "rejected": r["perturbed_answer"][0]}
            for r in items[: BATCH["short"]]
        ]
    rows = []
    for i in range(BATCH["chat"]):
        group = items[i * 12 : (i + 1) * 12]
        rows.append(
            {
                "prompt": " ".join(r["question"] for r in group[:4]),
                "chosen": " ".join(r["answer"] for r in group),
                "rejected": " ".join(r["perturbed_answer"][0] for r in group),
            }
        )
    return rows


def make_lists(count: int) -> list[dict]:
    """TOFU lists of K = 4 graded answers: the answer, its paraphrase and two perturbed answers."""
    return [
        {
            "prompt": r["question"],
            "completions": [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"][:2]],
            "scores": [1.0, 0.75, 0.25, 0.0],
        }
        for r in tofu_rows()[:count]
    ]


MODEL_SIZE = dict(
    hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4
)


def build_model(out: Path, vocab: int, **size) -> Path:
    """The TOFU-trained tokenizer and a Llama of ``MODEL_SIZE`` (or ``size``), embeddings resized to ``vocab``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.models import build_tiny_model

    texts = [t for r in tofu_rows() for t in (r["question"], r["answer"], *r["perturbed_answer"])]
    base = build_tiny_model(
        texts, out / "base", vocab_size=2000, max_position_embeddings=2048, seed=0, **(size or MODEL_SIZE)
    )
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(0)
    model.resize_token_embeddings(vocab, mean_resizing=False)
    path = out / f"v{vocab}"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(base).save_pretrained(path)
    return path


def fused_adamw(stepper):
    """Both trainers' configs default to ``adamw_torch_fused`` (one pass per tensor, no temporaries):
    the hand stepper uses it too, with ``bench.Stepper``'s learning rate."""
    params = [p for p in stepper.model.parameters() if p.requires_grad]
    stepper.optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    return stepper


def ours(model_dir, rows, out, steps, **device_args):
    """``device_args``: training arguments replacing the CPU settings (``use_cpu``, ``bf16``; bench_gpu.py)."""
    return fused_adamw(
        bench.ours(
            "dpo", model_dir, rows, out, len(rows), steps, device_args, ref_mode="precomputed",
            max_length=MAX_LENGTH,
        )
    )  # fmt: skip


def trl(model_dir, rows, out, steps, **device_args):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        **bench.train_args(out, len(rows), steps, **{"bf16": False, **device_args}),
        beta=0.1,
        max_length=MAX_LENGTH,
        padding_free=True,  # this TRL (1.16) falls back to padding, with a warning
        precompute_ref_log_probs=True,
        gradient_checkpointing=False,  # TRL's DPOConfig turns it on by default: slower
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    return fused_adamw(bench.Stepper(trainer, steps))


SIDES = {"ours": ours, "trl": trl}


@torch.no_grad()
def move_policy(stepper) -> None:
    """The same seeded nudge of every policy weight on both sides, so the loss is not just log 2."""
    gen = torch.Generator().manual_seed(1)
    for p in stepper.model.parameters():
        p.add_((torch.randn(p.shape, generator=gen) * 0.02).to(p.device, p.dtype))


@torch.no_grad()
def first_loss(stepper) -> float:
    trainer = stepper.trainer
    return float(trainer.compute_loss(stepper.model, trainer._prepare_inputs(stepper.batches[0])))


def head_share(stepper, vocab: int) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        stepper.step(0)
    total = head = 0.0
    for ev in prof.key_averages(group_by_input_shape=True):
        total += ev.self_cpu_time_total
        if any(vocab in shape for shape in ev.input_shapes if isinstance(shape, list)):
            head += ev.self_cpu_time_total
    return head / total


def _status_kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def peak_child(side: str, model_dir: str, profile: str) -> None:
    """One side alone: how far the resident set rises above its pre-step level over two steps (MB).

    The kernel's peak (VmHWM) is reset after the trainer is built (``/proc/self/clear_refs``), so
    the reference precomputation and loading do not count.
    """
    with tempfile.TemporaryDirectory() as tmp:
        stepper = SIDES[side](model_dir, make_rows(profile), Path(tmp), 2)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
        stepper.step(0)
        stepper.step(1)
        after = _status_kb("VmHWM")
    print(
        json.dumps({"built_mb": before / 1024, "peak_mb": after / 1024, "step_mb": (after - before) / 1024})
    )


def time_child(side: str, model_dir: str, profile: str, steps: str) -> None:
    """One side alone (for shapes whose two trainers do not fit one process): first loss, step times, head share."""
    with tempfile.TemporaryDirectory() as tmp:
        stepper = SIDES[side](model_dir, make_rows(profile), Path(tmp), int(steps))
        move_policy(stepper)
        loss = first_loss(stepper)
        times = [stepper.step(i) for i in range(int(steps))]
        share = head_share(stepper, stepper.model.config.vocab_size)
    print(json.dumps({"loss": loss, "times": times, "head_share": share}))


def in_processes(model_dir: Path, profile: str, rounds: int, steps: int, warmup: int) -> tuple[dict, tuple]:
    """Each side in its own process, the order alternated per round; step i of one side's process is
    paired with step i of the other's in the same round."""
    runs = {"ours": [], "trl": []}
    for i in range(rounds):
        for side in ("ours", "trl") if i % 2 == 0 else ("trl", "ours"):
            cmd = [sys.executable, __file__, "--time-child", side, str(model_dir), profile, str(steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[side].append(json.loads(out.strip().splitlines()[-1]))
    ours_t = [t for run in runs["ours"] for t in run["times"][warmup:]]
    trl_t = [t for run in runs["trl"] for t in run["times"][warmup:]]
    r = {"a_s": statistics.median(ours_t), "b_s": statistics.median(trl_t)}
    r.update(bench.spread([a / b for a, b in zip(ours_t, trl_t)]))
    losses = runs["ours"][0]["loss"], runs["trl"][0]["loss"]
    shares = runs["ours"][0]["head_share"], runs["trl"][0]["head_share"]
    return r, (losses, shares)


def peak(side: str, model_dir: Path, profile: str) -> dict:
    cmd = [sys.executable, __file__, "--peak-child", side, str(model_dir), profile]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


class Budgeted:
    """A stepper whose steps run with the given LM-head budgets (``CHUNK_BYTES``, ``HOLD_WEIGHTS``)."""

    def __init__(self, stepper, **budgets):
        self.stepper, self.budgets = stepper, budgets

    def step(self, i: int) -> float:
        from alignkit.models import head

        for name, value in self.budgets.items():
            setattr(head, name, value)
        return self.stepper.step(i)


def chunk_cost(vocab: int, profile: str, steps: int, warmup: int) -> dict:
    """alignkit as shipped / alignkit with every chunk recomputed in the backward (``HOLD_WEIGHTS = 0``)."""
    from alignkit.models import head

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, rows = build_model(Path(tmp) / "models", vocab), make_rows(profile)
        shipped, recompute = (ours(model_dir, rows, Path(tmp) / side, steps) for side in ("a", "b"))
        hold = head.HOLD_WEIGHTS
        try:
            r = bench.alternate(
                Budgeted(shipped, HOLD_WEIGHTS=hold), Budgeted(recompute, HOLD_WEIGHTS=0), steps, warmup
            )
        finally:
            head.HOLD_WEIGHTS = hold
    print(f"vocab {vocab} {profile}: shipped (probabilities kept) / all recomputed, step time {bench.fmt_ratio(r)}; "
          f"{r['a_s'] * 1e3:.0f} vs {r['b_s'] * 1e3:.0f} ms", flush=True)  # fmt: skip
    return r


def lipo_relations(vocab: int, lists: int, steps: int, warmup: int) -> dict:
    """alignkit ``lipo`` on K = 4 lists vs TRL DPO on the same lists' 6 pairs each, relations per second."""
    from alignkit.data.synthetic.preference import to_pairwise

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, rows = build_model(Path(tmp) / "models", vocab), make_lists(lists)
        pairs = to_pairwise(rows)
        a = fused_adamw(
            bench.ours("lipo", model_dir, rows, Path(tmp) / "ours", lists, steps, ref_mode="precomputed",
                       max_length=MAX_LENGTH)
        )  # fmt: skip
        b = trl(model_dir, pairs, Path(tmp) / "trl", steps)
        r = bench.alternate(a, b, steps, warmup)
    relations = len(pairs)  # K(K-1)/2 = 6 per list
    speedup = {"ratio": 1 / r["ratio"], "q1": 1 / r["q3"], "q3": 1 / r["q1"], "n": r["n"]}
    print(
        f"vocab {vocab} LiPO K=4 ({lists} lists) vs TRL DPO on their {relations} pairs: relations/s "
        f"{relations / r['a_s']:.2f} vs {relations / r['b_s']:.2f} -> {bench.fmt_ratio(speedup)}; "
        f"{r['a_s'] * 1e3:.0f} vs {r['b_s'] * 1e3:.0f} ms",
        flush=True,
    )
    return {"vocab": vocab, "lists": lists, "relations": relations, **r, "speedup": speedup}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocabs", default="32000,128256")
    parser.add_argument("--profiles", default="short,chat")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument(
        "--chunk-cost", action="store_true", help="only: alignkit with vs without kept probabilities"
    )
    parser.add_argument("--peak-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--time-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument(
        "--processes",
        type=int,
        metavar="ROUNDS",
        help="each side in its own process, ROUNDS alternated rounds",
    )
    parser.add_argument("--chat-pairs", type=int, help="pairs per chat step (default 2)")
    parser.add_argument("--lipo", type=int, metavar="LISTS", help="only: LiPO K=4 relations/s vs TRL DPO")
    args = parser.parse_args(argv)
    if args.chat_pairs:
        os.environ["BENCH_VOCAB_CHAT_PAIRS"] = str(args.chat_pairs)
        BATCH["chat"] = args.chat_pairs
    torch.set_num_threads(1)
    if args.peak_child:
        peak_child(*args.peak_child)
        return 0
    if args.time_child:
        time_child(*args.time_child)
        return 0
    if args.lipo:
        for vocab in map(int, args.vocabs.split(",")):
            lipo_relations(vocab, args.lipo, args.steps, args.warmup)
        return 0
    if args.chunk_cost:
        for vocab in map(int, args.vocabs.split(",")):
            for profile in args.profiles.split(","):
                chunk_cost(vocab, profile, args.steps, args.warmup)
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for vocab in map(int, args.vocabs.split(",")):
            model_dir = build_model(Path(tmp) / "models", vocab)
            for profile in args.profiles.split(","):
                rows = make_rows(profile)
                prompt, completion = bench.token_lengths(model_dir, rows)
                if args.processes:
                    r, (losses, shares) = in_processes(
                        model_dir, profile, args.processes, args.steps, args.warmup
                    )
                else:
                    a = ours(model_dir, rows, Path(tmp) / "ours", args.steps)
                    b = trl(model_dir, rows, Path(tmp) / "trl", args.steps)
                    move_policy(a)
                    move_policy(b)
                    losses = first_loss(a), first_loss(b)
                    r = bench.alternate(a, b, args.steps, args.warmup)
                    shares = head_share(a, vocab), head_share(b, vocab)
                    del a, b
                mem = {side: peak(side, model_dir, profile) for side in SIDES}
                res = {
                    "vocab": vocab, "profile": profile, "pairs": len(rows), "prompt_tokens": prompt,
                    "completion_tokens": completion, "loss_ours": losses[0], "loss_trl": losses[1],
                    **r, "head_share_ours": shares[0], "head_share_trl": shares[1], "memory": mem,
                    "memory_ratio": mem["ours"]["step_mb"] / mem["trl"]["step_mb"],
                }  # fmt: skip
                results.append(res)
                print(
                    f"vocab {vocab} {profile} ({len(rows)} pairs, prompt {prompt:.0f} / completion "
                    f"{completion:.0f} tokens): step time ours/TRL {bench.fmt_ratio(r)}; "
                    f"{r['a_s'] * 1e3:.0f} vs {r['b_s'] * 1e3:.0f} ms; loss {losses[0]:.8f} vs {losses[1]:.8f} "
                    f"(|diff| {abs(losses[0] - losses[1]):.1e}); step peak memory {mem['ours']['step_mb']:.0f} vs "
                    f"{mem['trl']['step_mb']:.0f} MB ({res['memory_ratio']:.3f}); LM head share "
                    f"{shares[0]:.0%} vs {shares[1]:.0%}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
