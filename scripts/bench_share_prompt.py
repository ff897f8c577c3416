"""``share_prompt``: where packing a list's (or a pair's) prompt pays, and how cost grows with K and length.

Three measurements on a random-weight Llama (hidden 256, 4 layers, 4 heads, sdpa, float32, CPU, one
torch thread; vocabulary ``--vocab``, 1,024 by default) fed random token ids, each timing one training
step's model work: the policy's forward + backward and a frozen reference's forward over the same rows
(as DPO/LiPO with a reference model run them; the loss and the optimizer, which do not depend on the
layout, are left out). The compact LM head (alignkit's CPU default) scores the completion positions.

* ``crossover``: flat vs packed (``share_prompt="on"``) over a grid of K (2, 4), prompt and completion
  lengths; per point the speed-up flat/packed (median and IQR of alternated steps) next to the cost
  ratio ``shared_prompt.estimated_costs`` predicts. The ``auto`` rule's constants come from here:
  ``PAIRS_PER_POSITION`` is fitted (least squares of log speed-up on log predicted ratio over the
  candidates printed) and ``AUTO_MIN_RATIO`` is the predicted ratio above which every measured point
  is at least as fast packed. Then ``auto`` itself is timed against flat at every point, with the
  decision's own cost as a share of the flat step.
* ``control``: flat against flat at the points ``auto`` keeps flat (the noise floor of the ratio).
* ``lists``: step time and peak memory against list size K = 2..16 (4 lists of prompt 64 /
  completion 32 tokens), flat vs packed.
* ``lengths``: DPO pairs (4 pairs, prompt:completion 1:1) against sequence length 128..2048, flat:
  step time and peak memory.

Peak memory: each point in its own process, the rise of the peak resident set over two steps.

    python scripts/bench_share_prompt.py [--sections crossover,lists,lengths] [--reps 7] [--json F]
    python scripts/bench_share_prompt.py --plot F.json   # the two cost-curve figures into docs/
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402
from bench import spread  # noqa: E402  (scripts/: median and quartiles of alternated ratios)

HIDDEN, LAYERS = 256, 4


def build(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=688,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        attn_implementation="sdpa",
    )
    policy = LlamaForCausalLM(config)
    reference = LlamaForCausalLM(config).eval().requires_grad_(False)
    return policy, reference


def lists_batch(vocab: int, lists: int, k: int, prompt: int, completion: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(lists):
        p = torch.randint(5, vocab, (prompt,), generator=gen)
        rows += [torch.cat([p, torch.randint(5, vocab, (completion,), generator=gen)]) for _ in range(k)]
    ids = torch.stack(rows)
    completion_mask = torch.zeros_like(ids)
    completion_mask[:, prompt:] = 1
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion_mask}


def step(policy, reference, batch, share) -> float:
    from alignkit.trainers.forward import row_outputs

    start = time.perf_counter()
    policy.zero_grad(set_to_none=True)
    with torch.no_grad():
        ref = row_outputs(reference, batch, want_logits=False, fused=False, share_prompt=share).seq_logps
    seq = row_outputs(policy, batch, want_logits=False, fused=False, share_prompt=share).seq_logps
    ((seq - ref) * torch.linspace(-1, 1, len(seq))).sum().backward()
    return time.perf_counter() - start


def spearman(xs: list[float], ys: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def alternate(policy, reference, batch, a, b, reps: int) -> dict:
    """Steps with layouts ``a`` and ``b`` in turn (a b, b a, ...); the first pair is a warm-up."""
    times = {a: [], b: []}
    for i in range(reps + 1):
        for share in (a, b) if i % 2 == 0 else (b, a):
            times[share].append(step(policy, reference, batch, share))
    ta, tb = times[a][1:], times[b][1:]
    return {
        "a_s": statistics.median(ta),
        "b_s": statistics.median(tb),
        **spread([x / y for x, y in zip(ta, tb)]),
    }


GRID = [  # (K, prompt, completion): prompt:completion 1/4 to 8, at short and long lengths
    *[
        (2, p, c)
        for p, c in ((16, 16), (64, 16), (128, 16), (16, 64), (64, 64), (256, 64), (64, 256), (1024, 256))
    ],
    *[(4, p, c) for p, c in ((16, 16), (64, 16), (16, 64), (64, 64), (256, 64))],
]
TOKENS = 1024  # flat tokens per step (at least one list)


def grid_batches(vocab: int):
    """``(k, prompt, completion, lists, batch)`` for each GRID point: about TOKENS flat tokens a step."""
    for k, p, c in GRID:
        lists = max(1, TOKENS // (k * (p + c)))
        yield k, p, c, lists, lists_batch(vocab, lists, k, p, c)


def crossover(vocab: int, reps: int) -> dict:
    from alignkit.trainers import shared_prompt

    policy, reference = build(vocab)
    points, batches = [], []
    for k, p, c, lists, batch in grid_batches(vocab):
        batches.append(batch)
        packed = shared_prompt.pack(batch)
        r = alternate(policy, reference, batch, False, "on", reps)
        points.append(
            {
                "k": k,
                "prompt": p,
                "completion": c,
                "lists": lists,
                "flat_positions": batch["input_ids"].numel(),
                "packed_positions": packed.input_ids.numel(),
                **r,
            }
        )
        print(
            f"K={k} P={p} C={c} lists={lists}: flat/packed {r['ratio']:.3f} (IQR {r['q1']:.3f}-{r['q3']:.3f})",
            flush=True,
        )
    # The rule only needs the predicted ratio to order the points as the measured speed-ups do: pick the
    # constant with the best rank correlation, then the smallest threshold above which all points pay.
    fits = {}
    measured = [pt["ratio"] for pt in points]
    shipped = shared_prompt.PAIRS_PER_POSITION
    for c in (0.25, 0.5, 1, 2, 4, 8, 16, 1e9):
        shared_prompt.PAIRS_PER_POSITION = c
        predicted = []
        for batch in batches:
            f, s = shared_prompt.estimated_costs(batch, HIDDEN)
            predicted.append(f / s)
        shared_prompt.PAIRS_PER_POSITION = shipped  # later sections (auto, control) use the shipped rule
        rho = spearman(predicted, measured)
        paying = [x for x, y in zip(predicted, measured) if y < 1.0]
        threshold = max(paying) * 1.01 if paying else min(predicted)
        fits[c] = {"spearman": rho, "threshold": threshold, "predicted": predicted}
        print(
            f"PAIRS_PER_POSITION={c}: spearman {rho:.3f}; every point with predicted ratio >= "
            f"{threshold:.3f} is faster packed",
            flush=True,
        )
    return {"points": points, "fit": fits}


def auto_check(vocab: int, reps: int) -> list[dict]:
    from alignkit.trainers import shared_prompt

    policy, reference = build(vocab)
    out = []
    for k, p, c, _, batch in grid_batches(vocab):
        f, s = shared_prompt.estimated_costs(batch, HIDDEN)
        r = alternate(policy, reference, batch, False, "auto", reps)
        packs = shared_prompt.worth_packing(batch, HIDDEN)
        # What auto adds where it stays flat is this decision (the forward is the flat one): timed alone,
        # as a share of the flat step, it is free of the step-to-step noise of the alternated ratio.
        decision = []
        for _ in range(50):
            start = time.perf_counter()
            shared_prompt.worth_packing(batch, HIDDEN)
            decision.append(time.perf_counter() - start)
        share = statistics.median(decision) / r["a_s"]
        out.append(
            {
                "k": k,
                "prompt": p,
                "completion": c,
                "predicted": f / s,
                "packed": packs,
                "decision_share": share,
                **r,
            }
        )
        print(
            f"auto K={k} P={p} C={c}: predicted {f / s:.2f} packed={packs} flat/auto {r['ratio']:.3f} "
            f"(IQR {r['q1']:.3f}-{r['q3']:.3f}); decision {100 * share:.3f}% of the flat step "
            f"({1e3 * r['a_s']:.0f} ms)",
            flush=True,
        )
    return out


def control(vocab: int, reps: int) -> list[dict]:
    """A/A: at the points ``auto`` keeps flat, flat against flat (``False`` against ``"off"``, the same
    computation) through the same alternation, i.e. the spread the machine alone gives the ratio."""
    from alignkit.trainers import shared_prompt

    policy, reference = build(vocab)
    out = []
    for k, p, c, _, batch in grid_batches(vocab):
        if shared_prompt.worth_packing(batch, HIDDEN):
            continue
        r = alternate(policy, reference, batch, False, "off", reps)
        out.append({"k": k, "prompt": p, "completion": c, **r})
        print(
            f"A/A K={k} P={p} C={c}: flat/flat {r['ratio']:.3f} (IQR {r['q1']:.3f}-{r['q3']:.3f})", flush=True
        )
    return out


def _status_kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def peak_child(vocab: int, lists: int, k: int, p: int, c: int, share: str) -> None:
    policy, reference = build(vocab)
    batch = lists_batch(vocab, lists, k, p, c)
    share_value = False if share == "off" else share
    # The kernel's peak (VmHWM) is reset once the models and the batch exist, so imports and building
    # do not count: the rise of the peak over the resident set before two steps.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    times = [step(policy, reference, batch, share_value) for _ in range(2)]
    after = _status_kb("VmHWM")
    print(json.dumps({"peak_mb": (after - before) / 1024, "step_s": min(times)}))


def peak(vocab, lists, k, p, c, share) -> dict:
    cmd = [sys.executable, __file__, "--peak-child", *map(str, (vocab, lists, k, p, c, share))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def lists_curve(vocab: int, reps: int) -> list[dict]:
    policy, reference = build(vocab)
    out = []
    for k in (2, 4, 8, 16):
        batch = lists_batch(vocab, 4, k, 64, 32)
        r = alternate(policy, reference, batch, False, "on", reps)
        mem = {share: peak(vocab, 4, k, 64, 32, share)["peak_mb"] for share in ("off", "on")}
        out.append(
            {
                "k": k,
                "flat_s": r["a_s"],
                "packed_s": r["b_s"],
                **r,
                "flat_mb": mem["off"],
                "packed_mb": mem["on"],
            }
        )
        print(
            f"lists K={k}: flat {r['a_s']:.3f} s packed {r['b_s']:.3f} s speed-up {r['ratio']:.3f} "
            f"(IQR {r['q1']:.3f}-{r['q3']:.3f}); peak {mem['off']:.0f} vs {mem['on']:.0f} MB",
            flush=True,
        )
    return out


def lengths_curve(vocab: int, reps: int) -> list[dict]:
    policy, reference = build(vocab)
    out = []
    for length in (128, 256, 512, 1024, 2048):
        batch = lists_batch(vocab, 4, 2, length // 2, length // 2)
        times = [step(policy, reference, batch, False) for _ in range(reps + 1)][1:]
        mem = peak(vocab, 4, 2, length // 2, length // 2, "off")["peak_mb"]
        s = spread(times)
        out.append({"length": length, "step_s": s["ratio"], "q1": s["q1"], "q3": s["q3"], "peak_mb": mem})
        print(
            f"DPO length {length}: step {s['ratio']:.3f} s (IQR {s['q1']:.3f}-{s['q3']:.3f}), "
            f"{s['ratio'] / length * 1000:.2f} ms/token; peak {mem:.0f} MB",
            flush=True,
        )
    return out


def plot(results: dict, folder: Path) -> None:
    """docs/share_prompt_lists.png (step time and peak memory vs K) and docs/dpo_lengths.png (vs length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "lists" in results:
        pts = results["lists"]
        ks = [p["k"] for p in pts]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        # The per-step ratio of alternated steps, not the absolute times: those follow the machine's load.
        ratio = [p["ratio"] for p in pts]
        left.errorbar(ks, ratio, yerr=[[r - p["q1"] for r, p in zip(ratio, pts)], [p["q3"] - r for r, p in zip(ratio, pts)]],
                      fmt="s-", capsize=3)  # fmt: skip
        left.axhline(1.0, color="grey", lw=0.8)
        left.set(xlabel="list size K", ylabel="speed-up flat / shared (median, IQR)",
                 title="LiPO, 4 lists, prompt 64 / completion 32")  # fmt: skip
        right.plot(ks, [p["flat_mb"] for p in pts], "o-", label="flat")
        right.plot(ks, [p["packed_mb"] for p in pts], "s-", label="shared prompt")
        right.set(xlabel="list size K", ylabel="peak RSS rise (MB)", title="peak memory")
        right.legend()
        fig.tight_layout()
        fig.savefig(folder / "share_prompt_lists.png", dpi=110)
    if "lengths" in results:
        pts = results["lengths"]
        ls = [p["length"] for p in pts]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        left.plot(ls, [p["step_s"] / p["length"] * 1000 for p in pts], "o-")
        left.set(
            xscale="log",
            xlabel="sequence length (tokens)",
            ylabel="ms per token of length",
            title="DPO, 4 pairs, prompt = completion",
        )
        right.plot(ls, [p["peak_mb"] for p in pts], "o-")
        right.set(
            xscale="log",
            yscale="log",
            xlabel="sequence length (tokens)",
            ylabel="peak RSS rise (MB)",
            title="peak memory",
        )
        fig.tight_layout()
        fig.savefig(folder / "dpo_lengths.png", dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="crossover,auto,lists,lengths")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json")
    parser.add_argument("--peak-child", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--plot", help="draw the figures from this results JSON into docs/ and stop")
    args = parser.parse_args(argv)
    if args.plot:
        plot(json.loads(Path(args.plot).read_text()), ROOT / "docs")
        return 0
    torch.set_num_threads(1)
    if args.peak_child:
        v, n, k, p, c, share = args.peak_child
        peak_child(int(v), int(n), int(k), int(p), int(c), share)
        return 0
    sections = {
        "crossover": crossover,
        "auto": auto_check,
        "control": control,
        "lists": lists_curve,
        "lengths": lengths_curve,
    }
    results = {}
    with open("/proc/loadavg") as f:
        results["load_before"] = f.read().split()[:3]
    for name in args.sections.split(","):
        results[name] = sections[name](args.vocab, args.reps)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    with open("/proc/loadavg") as f:
        results["load_after"] = f.read().split()[:3]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
