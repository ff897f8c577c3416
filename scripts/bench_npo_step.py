"""NPO step time: alignkit vs an open-unlearning-style step, on the same batches and the same model.

open-unlearning (OU, ``locuslab/open-unlearning``): its trainer needs Hydra configs tied to its
repository layout, so its NPO step (``src/trainer/unlearn/npo.py``'s ``compute_loss`` and
``grad_diff.py``'s NLL retain term) is written out here around OU's own ``compute_dpo_loss``
(``src/trainer/utils.py``, imported by path from a clone, ``--ou-clone``; without a clone that
function is reproduced from reading it; none of its code is copied). Per step OU runs three
plain Hugging Face forwards, each with ``labels`` (so the model also computes its own mean
cross-entropy over the full logits):

1. policy on the forget batch; the summed answer NLL per row via its own ``CrossEntropyLoss(reduction="none")``;
2. the frozen reference on the forget batch, under ``no_grad``, the same way;
3. policy on the retain batch; the retain term is that forward's ``.loss`` (token-mean NLL);

``loss = γ · (-(2/β) · logsigmoid(β · (0 - (S_ref - S))).mean()) + α · retain`` (β 0.1, γ = α = 1),
then backward and an AdamW step. alignkit's step is its trainer's own ``compute_loss`` (ONE policy
forward over forget + retain rows, one reference forward over the forget rows) + backward + the same
AdamW step, with the compact LM head (this CPU's ``auto``), with TRL's fused head for comparison, and
with ``ref_mode="precomputed"`` (reference log-probs cached in one pass before training, so the step
has no reference forward; the pass itself is not timed).

Same batches: forget/retain pairs are drawn once and fed to alignkit as a pairing
(``retain_pairing="aligned"``, the way a pairing file is replayed) with ``boundary="joint"`` (OU's
tokenisation). Each OU batch is made from the very tensors alignkit collated: the forget rows and
the retain rows, each cut to its own longest row (OU pads them separately), ``labels`` = the ids on
answer tokens and -100 elsewhere. All modes start from the same weights and take their steps in
turn (A B C, C B A, ...), so each step's ratio is measured under the same machine load; the median
over steps is reported. Their losses are compared step by step too (the same trajectory, so they
must agree up to float32 rounding).

Target (issue 11): alignkit's NPO step <= 0.8x OU's.

Run: ``python scripts/bench_npo_step.py [--quick] [--steps N] [--batch-size B] [--vocab V] [--modes M] [--threads T]``
(``--vocab`` beyond what the BPE learns on the data resizes the embeddings to it, as a real vocabulary).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

BETA, GAMMA, ALPHA, LR = 0.1, 1.0, 1.0, 1e-5
MODES = ("alignkit", "alignkit_fused", "alignkit_precomputed", "ou_style")


def _quiet():
    import logging
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("alignkit").setLevel(logging.ERROR)


def _rows(data: str | None) -> tuple[list[dict], list[dict], str]:
    """TOFU forget10 / retain90: the real files when ``../shared/data/tofu`` is there, else synthetic."""
    folder = Path(data) if data else REPO.parent / "shared" / "data" / "tofu"
    if (folder / "forget10.json").is_file():
        from alignkit.data import load_rows

        return list(load_rows(folder, "forget10")), list(load_rows(folder, "retain90")), f"TOFU ({folder})"
    from alignkit.data.synthetic.tofu import build_tofu_files

    files = build_tofu_files(num_people=40, seed=0)
    return files["forget10.json"], files["retain90.json"], "synthetic TOFU (40 people)"


# --------------------------------------------------------------------------- the two steps


class AlignKitStep:
    """alignkit's NPO+RT trainer: ``compute_loss`` + backward + AdamW on pre-collated batches."""

    def __init__(
        self, model_dir, tokenizer, forget, retain, batch_size, out: Path, *, fused=False, ref_mode="model"
    ):
        from transformers import AutoModelForCausalLM

        from alignkit import get_method

        spec = get_method("npo")
        args = spec.make_config(
            output_dir=str(out),
            max_steps=1,
            per_device_train_batch_size=batch_size,
            learning_rate=LR,
            beta=BETA,
            forget_weight=GAMMA,
            retain_weight=ALPHA,
            retain_loss="nll",
            retain_pairing="aligned",
            train_sampling_strategy="sequential",
            boundary="joint",
            prompt_format="qa_plain",
            fused_lm_head="on" if fused else "off",
            ref_mode=ref_mode,
            ref_cache_dir=str(out / "ref_cache"),
            save_strategy="no",
            use_cpu=True,
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        self.trainer = trainer = spec.trainer_cls(
            AutoModelForCausalLM.from_pretrained(model_dir),
            args=args,
            train_dataset=forget,
            retain_dataset=retain,
            processing_class=tokenizer,
        )
        data = trainer.train_dataset  # ForgetRetainDataset, pair i = (forget[i], retain[i])
        self.batches = [
            trainer.data_collator([data[i] for i in range(b, min(b + batch_size, len(data)))])
            for b in range(0, len(data) - batch_size + 1, batch_size)
        ]
        self.model = trainer.model
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR)

    def step(self, i: int) -> tuple[float, float]:
        t = time.perf_counter()
        loss = self.trainer.compute_loss(self.model, self.batches[i])
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t, float(loss)


def ou_batch(batch: dict, rows: slice) -> dict:
    """One OU input dict (input_ids, attention_mask, labels) from rows of an alignkit batch."""
    ids, att, comp = batch["input_ids"][rows], batch["attention_mask"][rows], batch["completion_mask"][rows]
    width = int(att.sum(-1).max())  # OU pads forget and retain batches each to its own longest row
    ids, att, comp = ids[:, :width], att[:, :width], comp[:, :width]
    return {"input_ids": ids, "attention_mask": att, "labels": ids.masked_fill(comp == 0, -100)}


def summed_nll(model, inputs: dict) -> torch.Tensor:
    """OU's per-row summed answer NLL: a plain forward WITH labels, then its own CE over the shifted logits."""
    logits = model(**inputs).logits
    labels = inputs["labels"][..., 1:]
    ce = F.cross_entropy(logits[..., :-1, :].transpose(-1, -2), labels, ignore_index=-100, reduction="none")
    return ce.sum(-1)


OU_UTILS = None  # open-unlearning's src/trainer/utils.py (torch/numpy only), when its clone is given


def load_ou_utils(clone: Path):
    """Import open-unlearning's ``trainer/utils.py`` by path (its package ``__init__`` needs Hydra)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ou_trainer_utils", clone / "src" / "trainer" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OUStyleStep:
    """open-unlearning's NPO step as its code runs it (module docstring): three forwards per step."""

    def __init__(self, model_dir, alignkit_batches):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir)
        self.ref = AutoModelForCausalLM.from_pretrained(model_dir).eval().requires_grad_(False)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR)
        self.batches = []
        for b in alignkit_batches:
            n = b["num_main"]
            self.batches.append((ou_batch(b, slice(0, n)), ou_batch(b, slice(n, None))))

    def step(self, i: int) -> tuple[float, float]:
        forget, retain = self.batches[i]
        t = time.perf_counter()
        if OU_UTILS is not None:  # open-unlearning's own NPO.compute_loss body, its function imported
            forget_loss, _ = OU_UTILS.compute_dpo_loss(self.model, self.ref, None, forget, beta=BETA)
        else:
            lose_loss = summed_nll(self.model, forget)
            with torch.no_grad():
                lose_ref_loss = summed_nll(self.ref, forget)
            lose_log_ratio = -(lose_loss - lose_ref_loss)
            forget_loss = -2 / BETA * F.logsigmoid(BETA * (0.0 - lose_log_ratio)).mean()
        retain_loss = self.model(**retain).loss
        loss = GAMMA * forget_loss + ALPHA * retain_loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t, float(loss)


# --------------------------------------------------------------------------- main


def bench(args) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.models import build_tiny_model

    forget, retain, source = _rows(args.data)
    rng = random.Random(0)
    n_pairs = args.steps * args.batch_size
    pairs = [(rng.randrange(len(forget)), rng.randrange(len(retain))) for _ in range(n_pairs)]
    forget_rows = [forget[i] for i, _ in pairs]
    retain_rows = [retain[j] for _, j in pairs]
    texts = [v for row in forget + retain for v in (row["question"], row["answer"])]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(
            texts,
            Path(tmp) / "model",
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=args.hidden * 11 // 4,
            num_hidden_layers=args.layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            seed=0,
        )
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        if model.config.vocab_size < args.vocab:  # the BPE stops short of a real vocabulary: resize to it
            torch.manual_seed(0)
            model.resize_token_embeddings(args.vocab, mean_resizing=False)
            model.save_pretrained(model_dir)
        n_params = sum(p.numel() for p in model.parameters())
        vocab = model.config.vocab_size
        runners = {
            name: AlignKitStep(
                model_dir, tokenizer, forget_rows, retain_rows, args.batch_size, Path(tmp) / name, **kw
            )
            for name, kw in (
                ("alignkit", {}),
                ("alignkit_fused", {"fused": True}),
                ("alignkit_precomputed", {"ref_mode": "precomputed"}),
            )
            if name in args.modes
        }
        runners["ou_style"] = OUStyleStep(model_dir, runners["alignkit"].batches)
        modes = [m for m in MODES if m in runners]
        times = {m: [] for m in modes}
        losses = {m: [] for m in modes}
        for i in range(args.steps):
            for m in modes if i % 2 == 0 else modes[::-1]:
                dt, loss = runners[m].step(i)
                times[m].append(dt)
                losses[m].append(loss)
            print(
                f"step {i + 1}/{args.steps}: "
                + ", ".join(f"{m} {1000 * times[m][-1]:.0f} ms" for m in modes),
                file=sys.stderr,
                flush=True,
            )
    kept = {m: v[args.warmup :] for m, v in times.items()}
    nan = [float("nan")] * len(kept["ou_style"])  # a mode left out (--modes)
    ratio = [a / o for a, o in zip(kept["alignkit"], kept["ou_style"])]
    ratio_fused = [a / o for a, o in zip(kept.get("alignkit_fused", nan), kept["ou_style"])]
    ratio_pre = [a / o for a, o in zip(kept.get("alignkit_precomputed", nan), kept["ou_style"])]
    return {
        "data": source,
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": vocab, "params_m": n_params / 1e6},
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "median_step_ms": {m: 1000 * statistics.median(v) for m, v in kept.items()},
        "ratio_alignkit_over_ou": statistics.median(ratio),
        "ratio_iqr": statistics.quantiles(ratio, n=4)[::2] if len(ratio) > 1 else ratio * 2,
        "ratio_fused_over_ou": statistics.median(ratio_fused),
        "ratio_precomputed_over_ou": statistics.median(ratio_pre),
        "fused_over_plain": statistics.median(
            [f / p for f, p in zip(kept.get("alignkit_fused", nan), kept["alignkit"])]
        ),
        "ratio_precomputed_iqr": statistics.quantiles(ratio_pre, n=4)[::2]
        if len(ratio_pre) > 1
        else ratio_pre * 2,
        "max_loss_diff_vs_ou": {
            m: max(abs(a - b) for a, b in zip(losses[m], losses["ou_style"])) for m in modes[:-1]
        },
        "first_loss": {m: losses[m][0] for m in modes},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 steps (about a minute).")
    ap.add_argument("--steps", type=int, help="Timed steps per mode (default 30; quick 8).")
    ap.add_argument("--warmup", type=int, default=2, help="Steps left out of the medians.")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--vocab", type=int, default=4096, help="Tokenizer/model vocabulary (BPE trained on the data)."
    )
    ap.add_argument(
        "--modes",
        default=",".join(MODES[:3]),
        help="alignkit modes to run against ou_style (comma-separated)",
    )
    ap.add_argument(
        "--ou-clone",
        default=str(REPO.parent / "ou" / "open-unlearning"),
        help="open-unlearning checkout: its compute_dpo_loss is imported for the OU step (else reproduced)",
    )
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noisy).")
    ap.add_argument("--data", help="A TOFU folder (default ../shared/data/tofu, else synthetic rows).")
    ap.add_argument("--json", help="Also write the results to this file.")
    args = ap.parse_args()
    args.steps = args.steps or (8 if args.quick else 30)
    args.modes = {"alignkit", *args.modes.split(",")}
    if args.steps <= args.warmup:
        ap.error(f"--steps must exceed --warmup ({args.warmup})")
    global OU_UTILS
    if (Path(args.ou_clone) / "src" / "trainer" / "utils.py").exists():
        OU_UTILS = load_ou_utils(Path(args.ou_clone))
    print(
        f"OU step: {'compute_dpo_loss imported from ' + args.ou_clone if OU_UTILS else 'reproduced'}",
        flush=True,
    )
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    _quiet()
    res = bench(args)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    m = res["model"]
    table = Table(
        title=f"NPO+RT step on the same batches: {res['data']}; Llama hidden {m['hidden']}, {m['layers']} layers, "
        f"vocab {m['vocab']} ({m['params_m']:.2f} M params); batch {res['batch_size']} forget + "
        f"{res['batch_size']} retain; {res['threads']} thread(s); medians of {res['steps'] - res['warmup']} steps"
    )
    for col in ("step", "forwards", "median step (ms)", "max |loss - OU loss|"):
        table.add_column(col, justify="left" if col == "step" else "right")
    diffs = res["max_loss_diff_vs_ou"]
    labels = {
        "alignkit": ("alignkit (compact head: CPU auto)", "2"),
        "alignkit_fused": ("alignkit (TRL fused head on)", "2"),
        "alignkit_precomputed": ("alignkit, ref_mode=precomputed", "1"),
        "ou_style": (
            "open-unlearning (its compute_dpo_loss)" if OU_UTILS else "open-unlearning-style (reproduced)",
            "3",
        ),
    }
    for mode, (label, forwards) in labels.items():
        if mode not in res["median_step_ms"]:
            continue
        diff = f"{diffs[mode]:.1e}" if mode in diffs else "-"
        table.add_row(label, forwards, f"{res['median_step_ms'][mode]:.0f}", diff)
    console.print(table)
    lo, hi = res["ratio_iqr"]
    verdict = "[green]meets[/]" if res["ratio_alignkit_over_ou"] <= 0.8 else "[red]misses[/]"
    console.print(
        f"  alignkit / OU-style step: [bold]{res['ratio_alignkit_over_ou']:.3f}x[/] (IQR {lo:.3f}-{hi:.3f}; "
        f"target <= 0.8x: {verdict}); with the fused head on: {res['ratio_fused_over_ou']:.3f}x; "
        f"fused / compact head: {res['fused_over_plain']:.3f}x.\n"
        f"  With the reference precomputed (one pass before training, cached; not counted here): "
        f"{res['ratio_precomputed_over_ou']:.3f}x.\n"
        "  Both steps run the same transformer layers on the same rows (policy forward + backward on "
        "forget and retain, reference forward on forget); alignkit saves only the LM head and "
        "log-softmax on prompt and padding positions and OU's unused in-model losses, so the like-for-like "
        "ratio is bounded by the LM head's share of the work (about 25% of the FLOPs at this shape)."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
