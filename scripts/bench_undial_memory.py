"""Full-distribution losses at vocab 128,256: one step with chunked (``HeadLogits``) vs whole logits.

A random-weight Llama (hidden 256, 2 layers, float32, CPU, one torch thread; ``bench_vocab.py``'s
shape) with a frozen copy as the reference. One step = the policy's forward (``row_outputs``, as the
trainers call it), the reference's forward without gradient, the loss, the per-token log-probs the trainer
logs every step (``logps/<role>`` and ``ref_logps/<role>`` for UNDIAL, ``retain/logps`` for retain KL;
read without gradient, as the trainer does) and the loss's backward (no optimizer).
Losses: ``undial`` (UNDIAL, every position, beta 10) and ``retain_kl`` (NPO+KL's retain term, every
position). Shapes (random token ids): ``short`` = 8 rows of 21 prompt + 36 answer tokens (TOFU's
lengths, as ``bench_vocab.py`` measured them), ``chat`` = 2 rows of 80 + 496 tokens.

* ``chunked``: the default path (``HeadLogits``; ``map_positions`` applies the head a chunk of
  positions at a time); ``whole``: the model's own ``[N, L, V]`` logits (the compact head switched
  off, as before issue 25's training change).
* Time: the two modes' steps alternated in one process (A B, B A, ...), the first ``--warmup``
  pairs left out; the median of the per-pair ratios chunked / whole with its IQR.
* Memory: each mode in its own process, the rise of the peak resident set (VmHWM reset after
  building) over its first step. Both modes' losses are printed (they must agree to 1e-6).

    python scripts/bench_undial_memory.py [--losses undial,retain_kl] [--shapes short,chat] [--steps 7]
    python scripts/bench_undial_memory.py --memory-only   # peak memory only
    python scripts/bench_undial_memory.py --hold-weights 16   # another kept-state budget
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import torch  # noqa: E402

VOCAB = 128256
SHAPES = {"short": (8, 21, 36), "chat": (2, 80, 496)}  # rows, prompt tokens, answer tokens


def _status_kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def build(shape: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=688, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
    )  # fmt: skip
    policy = LlamaForCausalLM(config)
    ref = LlamaForCausalLM(config).eval().requires_grad_(False)
    ref.load_state_dict(policy.state_dict())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the policy a little off the reference, so the KL is not 0
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    rows, prompt, answer = SHAPES[shape]
    ids = torch.randint(5, VOCAB, (rows, prompt + answer), generator=gen)
    completion = torch.zeros_like(ids)
    completion[:, prompt:] = 1
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion}
    return policy, ref, batch


def set_mode(models, mode: str) -> None:
    for model in models:  # True: the compact head (checked exact for a Llama); False: the model's logits
        model._alignkit_compact_head = mode == "chunked"


def step(policy, ref, batch, loss_name: str) -> float:
    from alignkit.losses import retain_kl_loss, undial_loss
    from alignkit.trainers.forward import row_outputs

    policy.zero_grad(set_to_none=True)
    out = row_outputs(policy, batch, want_logits=True, fused=False)
    with torch.no_grad():
        reference = row_outputs(ref, batch, want_logits=True, fused=False)
    if loss_name == "undial":
        loss = undial_loss(out.logits, reference.logits, out.labels, out.mask, beta=10.0).loss
    else:
        loss = retain_kl_loss(out.logits, reference.logits, out.mask).loss
    with torch.no_grad():  # the trainer's step metrics (BaseTrainer._record, compute_loss's retain/logps)
        logged = [out.seq_logps, *([reference.seq_logps] if loss_name == "undial" else [])]
    del logged
    loss.backward()
    return float(loss.detach())


class Side:
    def __init__(self, policy, ref, batch, loss_name: str, mode: str):
        self.args, self.mode, self.losses = (policy, ref, batch, loss_name), mode, []

    def step(self, i: int) -> float:
        set_mode(self.args[:2], self.mode)
        start = time.perf_counter()
        self.losses.append(step(*self.args))
        return time.perf_counter() - start


def set_budget(hold_weights: str | None) -> None:
    from alignkit.models import head

    if hold_weights is not None:  # the chunks' kept-state budget, in head weights (default: as shipped)
        head.HOLD_WEIGHTS = float(hold_weights)


def memory_child(mode: str, loss_name: str, shape: str, hold_weights: str) -> None:
    set_budget(None if hold_weights == "default" else hold_weights)
    policy, ref, batch = build(shape)
    set_mode((policy, ref), mode)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    loss = step(policy, ref, batch, loss_name)
    print(json.dumps({"loss": loss, "peak_rise_mb": (_status_kb("VmHWM") - before) / 1024}))


def memory(mode: str, loss_name: str, shape: str, hold_weights: str | None) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", mode, loss_name, shape, hold_weights or "default"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--losses", default="undial,retain_kl")
    parser.add_argument("--shapes", default="short,chat")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--hold-weights", help="the kept-state budget in head weights (HOLD_WEIGHTS)")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    import bench  # scripts/: alternate, fmt_ratio

    set_budget(args.hold_weights)

    for shape in args.shapes.split(","):
        for loss_name in args.losses.split(","):
            mem = {mode: memory(mode, loss_name, shape, args.hold_weights) for mode in ("chunked", "whole")}
            line = (
                f"{loss_name} {shape}: step peak memory chunked {mem['chunked']['peak_rise_mb']:.0f} vs whole "
                f"{mem['whole']['peak_rise_mb']:.0f} MB "
                f"({mem['chunked']['peak_rise_mb'] / mem['whole']['peak_rise_mb']:.3f})"
            )
            if not args.memory_only:
                policy, ref, batch = build(shape)
                chunked, whole = (Side(policy, ref, batch, loss_name, m) for m in ("chunked", "whole"))
                r = bench.alternate(chunked, whole, args.steps, args.warmup)
                diff = max(abs(a - b) for a, b in zip(chunked.losses, whole.losses))
                line += (
                    f"; step time chunked/whole {bench.fmt_ratio(r)}; {r['a_s'] * 1e3:.0f} vs "
                    f"{r['b_s'] * 1e3:.0f} ms; loss {chunked.losses[0]:.8f} (max |diff| {diff:.1e})"
                )
                del policy, ref, batch, chunked, whole
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
