"""Scoring with the prompt encoded once (``score_token_ids(share_prompt=...)``) against flat scoring.

TOFU forget10's teacher-forced pairs as alignkit's TOFU evaluation scores them (each question's answer,
paraphrased answer and 5 perturbed answers after the ``qa_plain`` prompt, EOS appended), tokenised by a
tokenizer trained here on those texts, through random Llama-shaped models of several sizes. For each
size: the predicted flat/shared cost ratio (``alignkit.eval.scoring.window_costs``, summed over the
windows) and the measured flat/shared wall-time ratio (median and IQR over alternated passes, one
torch thread), the largest |difference| of the per-pair average losses, and what ``auto`` chose.
This calibrates ``SCORE_MIN_RATIO``: ``auto`` should share where the measured ratio is > 1 and
stay flat where it is not.

    python scripts/bench_share_scoring.py [--reps 3] [--sizes 64x2,256x4,512x8,1024x4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
TOFU = ROOT.parent / "shared" / "data" / "tofu" / "forget10_perturbed.json"

from bench import spread  # noqa: E402

from alignkit.eval import scoring  # noqa: E402

# hidden x layers -> how many questions (7 pairs each) keep one pass to ~5-20 s on a CPU thread.
QUESTIONS = {64: 400, 256: 96, 512: 32, 1024: 16}


def tofu_pairs(n_questions: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    rows = [json.loads(line) for line in TOFU.read_text().splitlines() if line.strip()][:n_questions]
    texts = [
        (
            f"Question: {r['question']}\nAnswer:",
            [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]],
        )
        for r in rows
    ]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [t for q, answers in texts for t in (q, *answers)]
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=1024, special_tokens=["<pad>", "<unk>", "</s>"])
    )
    eos = tok.token_to_id("</s>")
    return [(tok.encode(q).ids, tok.encode(" " + a).ids + [eos]) for q, answers in texts for a in answers]


def model_of(hidden: int, layers: int, vocab: int = 2048):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    heads = max(1, hidden // 64)
    config = LlamaConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2), intermediate_size=int(hidden * 2.6875),
        vocab_size=vocab, max_position_embeddings=512,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def predicted(pairs, hidden: int, batch_size: int) -> float:
    keys = list(dict.fromkeys((tuple(p), tuple(t)) for p, t in pairs))
    windows, _ = scoring._plan_shared(keys, list(range(len(keys))), batch_size, "on", hidden)
    costs = [scoring.window_costs(keys, w, batch_size, hidden) for w in windows]
    return sum(c[0] for c in costs) / sum(c[1] for c in costs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sizes", default="64x2,256x4,512x8,1024x4")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    if not TOFU.exists():
        sys.exit(f"bench_share_scoring: {TOFU} not found (../shared/data/tofu beside the repository)")
    torch.set_num_threads(1)
    print(
        f"{'size':>9} {'pairs':>6} {'predicted':>9}  {'measured flat/shared (IQR)':<28} {'max |dloss|':>11}  auto"
    )
    for size in args.sizes.split(","):
        hidden, layers = (int(x) for x in size.split("x"))
        pairs = tofu_pairs(QUESTIONS.get(hidden, 16))
        model = model_of(hidden, layers)
        kw = {"pad_token_id": 0, "batch_size": args.batch_size}
        scoring.score_token_ids(model, pairs[: args.batch_size], share_prompt="on", **kw)  # warm-up
        ratios, out = [], {}
        for i in range(args.reps):
            t = {}
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                start = time.perf_counter()
                out[mode] = scoring.score_token_ids(model, pairs, share_prompt=mode, **kw)
                t[mode] = time.perf_counter() - start
            ratios.append(t["off"] / t["on"])
        diff = max(abs(a.avg_loss - b.avg_loss) for a, b in zip(out["off"], out["on"]))
        stats: dict = {}
        scoring.score_token_ids(model, pairs[: 8 * args.batch_size], share_prompt="auto", stats=stats, **kw)
        chose = "shared" if stats.get("shared_rows") else "flat"
        r = spread(ratios)
        print(
            f"{size:>9} {len(pairs):>6} {predicted(pairs, hidden, args.batch_size):>9.3f}  "
            f"{r['ratio']:.3f} ({r['q1']:.3f}-{r['q3']:.3f}, {r['n']})      {diff:>11.2e}  {chose}",
            flush=True,
        )


if __name__ == "__main__":
    main()
