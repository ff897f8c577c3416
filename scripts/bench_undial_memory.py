"""UNDIAL step (policy forward + backward, reference forward) at vocab 128,256: chunked vs whole logits.

Random-weight Llama (hidden 64, 2 layers), 4 rows x 128 tokens (96 answer tokens), 1 thread. ``lazy``:
the default path (``HeadLogits``, the head applied a chunk of positions at a time); ``full``: the model's
own ``[N, L, V]`` logits (the compact head switched off, as before issue 25's training change). Prints
the rise of the peak resident set (VmHWM reset after building) and the wall time of the one step.
Each mode in its own process:

    python scripts/bench_undial_memory.py lazy; python scripts/bench_undial_memory.py full
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

import torch  # noqa: E402


def _status_kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


def main(mode: str) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignkit.losses import undial_loss
    from alignkit.trainers.forward import row_outputs

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128256,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    policy, ref = LlamaForCausalLM(config), LlamaForCausalLM(config).eval().requires_grad_(False)
    if mode == "full":
        policy._alignkit_compact_head = ref._alignkit_compact_head = False  # the whole-logits path
    ids = torch.randint(5, 128256, (4, 128))
    completion = torch.zeros_like(ids)
    completion[:, 32:] = 1
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion}
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    out = row_outputs(policy, batch, want_logits=True, fused=False)
    with torch.no_grad():
        reference = row_outputs(ref, batch, want_logits=True, fused=False)
    loss = undial_loss(out.logits, reference.logits, out.labels, out.mask, beta=10.0).loss
    loss.backward()
    print(
        json.dumps(
            {
                "mode": mode,
                "logits": type(out.logits).__name__,
                "loss": float(loss),
                "peak_rise_mb": (_status_kb("VmHWM") - before) / 1024,
                "seconds": time.perf_counter() - start,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "lazy")
