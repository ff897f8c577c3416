"""alignkit's evaluators against open-unlearning's own, side by side, on the same tiny checkpoints.

Prints the wall-time ratio alignkit / open-unlearning (median and IQR over alternated runs) of

* ``tofu``: TOFU ``forget10`` (or ``--forget-split``), both sides reading the retain model's values
  from open-unlearning's log of it (``retain_logs_path`` / ``--retain-logs``);
* ``muse``: MUSE-News (the local sample), with the same four MIAs on both sides (Min-K%, Min-K%++,
  loss, zlib) and PrivLeak against the retain model's log;

and every metric both write, compared value by value (largest absolute difference per metric).

Each run is one process, timed from its start to its exit (imports and model loading included), run
in turn (OU, alignkit, OU, ...) so both sides see the same load. Both get one torch thread.

Set-up (cached under ``--work``, reused by later runs):

* ``hub/locuslab/TOFU`` and ``hub/muse-bench/MUSE-News``: the local files of ``../shared/data`` as
  Hugging Face dataset folders (a README whose ``configs`` name each Hub config and split). The
  open-unlearning runs start in ``hub/``, where ``datasets.load_dataset("locuslab/TOFU", ...)``
  resolves the Hub id to that local folder first, so open-unlearning's hydra configs run unchanged,
  offline.
* ``models/tofu_target`` / ``models/tofu_retain``: a tiny Llama (hidden 64, 2 layers, tokenizer of
  1,024 tokens trained on the TOFU eval texts) fine-tuned with alignkit's ``finetune`` on ``full`` /
  ``retain90`` (3 epochs, so it answers in TOFU's style and stops at EOS as real checkpoints do).
  ``models/muse_target`` / ``models/muse_retain``: tiny Llamas (vocabulary 4,000, 4,096 positions)
  fine-tuned 5 epochs on the sample's forget / retain texts.
* ``logs/*_retain``: open-unlearning's eval of each retain model (its ``*_EVAL.json`` is the
  reference of both sides).

Run: ``python scripts/bench_eval_vs_ou.py --bench tofu --repeats 3`` (``--ou-python`` and
``--ou-repo`` point at open-unlearning's own virtual environment and clone).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
TOFU_CONFIGS = [
    *(f"forget{x}" for x in ("01", "05", "10")),
    *(f"forget{x}_perturbed" for x in ("01", "05", "10")),
    *(f"holdout{x}" for x in ("01", "05", "10")),
    *(f"retain{x}" for x in ("90", "95", "99")),
    "retain_perturbed",
    "real_authors",
    "real_authors_perturbed",
    "world_facts",
    "world_facts_perturbed",
    "full",
]
# (config, split) of MUSE-News on the Hub -> the sample's file (retain2 is the Hub's retain split).
MUSE_FILES = {
    ("knowmem", "forget_qa"): "knowmem/forget_qa.json",
    ("knowmem", "forget_qa_icl"): "knowmem/forget_qa_icl.json",
    ("knowmem", "retain_qa"): "knowmem/retain2_qa.json",
    ("knowmem", "retain_qa_icl"): "knowmem/retain2_qa_icl.json",
    ("privleak", "forget"): "privleak/forget.json",
    ("privleak", "holdout"): "privleak/holdout.json",
    ("privleak", "retain"): "privleak/retain2.json",
    ("verbmem", "forget"): "verbmem/forget.json",
    ("raw", "forget"): "raw/forget.json",
}
MUSE_MIAS = ("mia_min_k", "mia_min_k_plus_plus", "mia_loss", "mia_zlib")


# ------------------------------------------------------------------------------------ set-up


def _readme(configs: dict[str, dict[str, str]]) -> str:
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in splits.items()]
    return "\n".join([*lines, "---", ""])


def prepare_hub(work: Path) -> Path:
    """Local dataset folders named as the Hub ids open-unlearning's configs load."""
    hub = work / "hub"
    tofu = hub / "locuslab" / "TOFU"
    if not (tofu / "README.md").exists():
        tofu.mkdir(parents=True, exist_ok=True)
        for name in TOFU_CONFIGS:
            shutil.copy(SHARED / "tofu" / f"{name}.json", tofu / f"{name}.json")
        (tofu / "README.md").write_text(_readme({n: {"train": f"{n}.json"} for n in TOFU_CONFIGS}))
    muse = hub / "muse-bench" / "MUSE-News"
    if not (muse / "README.md").exists():
        muse.mkdir(parents=True, exist_ok=True)
        configs: dict[str, dict[str, str]] = {}
        for (config, split), rel in MUSE_FILES.items():
            rows = json.loads((SHARED / "muse_news_sample" / rel).read_text())
            rows = [{"text": r} if isinstance(r, str) else r for r in rows]  # privleak/raw: bare strings
            out = f"{config}_{split}.jsonl"
            (muse / out).write_text("".join(json.dumps(r) + "\n" for r in rows))
            configs.setdefault(config, {})[split] = out
        (muse / "README.md").write_text(_readme(configs))
    return hub


def _finetune(base: Path, rows, out: Path, *, epochs: float, batch_size: int) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.trainers import get_method

    spec = get_method("finetune")
    args = spec.make_config(
        output_dir=str(out), num_train_epochs=epochs, learning_rate=1e-2, per_device_train_batch_size=batch_size,
        lr_scheduler_type="cosine", warmup_steps=10, save_strategy="no", report_to="none", use_cpu=True,
        seed=0, logging_steps=50, disable_tqdm=True, boundary="joint",
    )  # fmt: skip
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(base),
        args=args,
        train_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(base),
    )
    trainer.train()
    trainer.save_model(str(out))
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    _portable_tokenizer(out)
    return out


def _portable_tokenizer(folder: Path) -> None:
    """Name the tokenizer class both transformers versions know: open-unlearning pins transformers 4.45,
    which has no ``TokenizersBackend`` (transformers 5's name for a plain ``tokenizer.json`` tokenizer)
    and reads the extra special tokens as ``additional_special_tokens``."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        config["additional_special_tokens"] = extra
    path.write_text(json.dumps(config, indent=2))


def prepare_models(work: Path, bench: str) -> dict[str, Path]:
    import torch

    from alignkit.data import load_rows
    from alignkit.models import build_tiny_model

    torch.set_num_threads(1)
    models = work / "models"
    target, retain = models / f"{bench}_target", models / f"{bench}_retain"
    if (target / "config.json").exists() and (retain / "config.json").exists():
        return {"target": target, "retain": retain}
    import datasets

    base = models / f"{bench}_base"
    if bench == "tofu":
        texts = []
        for name in (
            "full",
            "forget10_perturbed",
            "retain_perturbed",
            "real_authors_perturbed",
            "world_facts",
        ):
            for row in load_rows(SHARED / "tofu", name):
                texts += [v for v in row.values() if isinstance(v, str)]
                texts += [v for v in (row.get("perturbed_answer") or []) if isinstance(v, str)]
        build_tiny_model(texts, base, vocab_size=1024, seed=0)
        qa = lambda split: load_rows(SHARED / "tofu", split).select_columns(["question", "answer"])  # noqa: E731
        _finetune(base, qa("full"), target, epochs=3, batch_size=16)
        _finetune(base, qa("retain90"), retain, epochs=3, batch_size=16)
    else:
        data = SHARED / "muse_news_sample"
        articles = json.loads((data / "raw" / "forget.json").read_text())
        qa = json.loads((data / "knowmem" / "forget_qa.json").read_text())
        texts = articles + [q["question"] + " " + q["answer"] for q in qa]
        build_tiny_model(texts, base, vocab_size=4000, max_position_embeddings=4096, seed=0)

        def rows(texts):
            """640-character windows: the first 128 characters as the prompt, the rest as the answer."""
            chunks = [t[i : i + 640] for t in texts for i in range(0, len(t), 640)]
            chunks = [c for c in chunks if len(c) > 256]
            return datasets.Dataset.from_dict(
                {"question": [c[:128] for c in chunks], "answer": [c[128:] for c in chunks]}
            )

        retain_texts = json.loads((data / "privleak" / "retain2.json").read_text())
        _finetune(base, rows(articles), target, epochs=5, batch_size=8)
        _finetune(base, rows(retain_texts), retain, epochs=5, batch_size=8)
    return {"target": target, "retain": retain}


# ------------------------------------------------------------------------------------ commands


def ou_command(args, bench: str, model: Path, out: Path, retain_logs: Path | None) -> list[str]:
    """open-unlearning's hydra command line for ``bench`` on ``model`` (CPU, float32, SDPA)."""
    model_overrides = [
        "model=Llama-2-7b-hf",  # base-model template: "Question: ...\nAnswer: ", no chat template
        f"model.model_args.pretrained_model_name_or_path={model}",
        f"model.tokenizer_args.pretrained_model_name_or_path={model}",
        "model.model_args.attn_implementation=sdpa",
        "model.model_args.torch_dtype=float32",
        "model.model_args.device_map=cpu",
    ]
    cmd = [str(args.ou_python), str(args.ou_repo / "src" / "eval.py"), "--config-name=eval.yaml"]
    if bench == "tofu":
        split = args.forget_split
        cmd += ["experiment=eval/tofu/default", *model_overrides]
        cmd += [f"forget_split={split}", f"holdout_split={split.replace('forget', 'holdout')}"]
        cmd += [f"eval.tofu.batch_size={args.batch_size}"]
    else:
        # OU's MUSE default runs KnowMem/VerbMem ROUGE, PrivLeak (whose pre-compute is Min-K%) and
        # extraction strength; the other three MIAs are appended to its defaults list.
        cmd += ["experiment=eval/muse/default", *model_overrides, "data_split=News"]
        cmd += [f"+eval/muse_metrics=[{','.join(MUSE_MIAS[1:])}]"]
    cmd += [f"retain_logs_path={retain_logs if retain_logs else 'null'}"]
    cmd += [f"task_name={out.name}", f"paths.output_dir={out}"]
    return cmd


def alignkit_command(args, bench: str, model: Path, out: Path, retain_logs: Path | None) -> list[str]:
    cmd = [
        str(args.alignkit),
        "eval",
        bench,
        "--model",
        str(model),
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    if bench == "tofu":
        cmd += ["--data", str(SHARED / "tofu"), "--forget-split", args.forget_split]
        cmd += ["--batch-size", str(args.batch_size), "--prompt-format", "qa_plain"]
    else:
        cmd += ["--data", str(SHARED / "muse_news_sample")]
    if retain_logs is not None:
        cmd += ["--retain-logs", str(retain_logs)]
    return cmd


def run_timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=cwd, env=ENV, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:3])} ... failed (exit {proc.returncode}); its output: {log}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# ------------------------------------------------------------------------------------ comparison


def _values(entry) -> dict[str, float]:
    """Flatten a metric's log entry to {path: number} (agg_value and every per-item number)."""
    out: dict[str, float] = {}

    def walk(x, path):
        if isinstance(x, bool) or x is None:
            return
        if isinstance(x, (int, float)):
            out[path] = float(x)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}/{k}")

    walk(entry, "")
    return out


def compare_logs(ours: dict, theirs: dict) -> dict[str, tuple[int, float]]:
    """Per shared metric: (numbers compared, largest |difference|); NaN where a side lacks a value."""
    out = {}
    for name in sorted(set(ours) & set(theirs)):
        a, b = _values(ours[name]), _values(theirs[name])
        keys = set(a) & set(b)
        if not keys:
            continue
        out[name] = (len(keys), max(abs(a[k] - b[k]) for k in keys))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", choices=("tofu", "muse"), default="tofu")
    p.add_argument("--forget-split", default="forget10")
    p.add_argument("--repeats", type=int, default=3, help="alternated runs per side")
    p.add_argument(
        "--batch-size", type=int, default=32, help="TOFU: rows per batch on both sides (OU's default)"
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/ak_vs_ou"))
    p.add_argument("--ou-python", type=Path, default=Path("/work/ou25/venv/bin/python"))
    p.add_argument("--ou-repo", type=Path, default=Path("/work/ou/open-unlearning"))
    p.add_argument("--alignkit", type=Path, default=Path(sys.executable).parent / "alignkit")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    bench = args.bench
    hub = prepare_hub(args.work)
    models = prepare_models(args.work, bench)
    tag = f"{bench}_{args.forget_split}" if bench == "tofu" else bench
    ref_dir = args.work / "logs" / f"{tag}_retain"
    eval_file = "TOFU_EVAL.json" if bench == "tofu" else "MUSE_EVAL.json"
    if not (ref_dir / eval_file).exists():
        print(f"open-unlearning on the retain model -> {ref_dir}", flush=True)
        run_timed(ou_command(args, bench, models["retain"], ref_dir, None), hub, args.work / "ou_retain.log")
    retain_logs = ref_dir / eval_file

    times: dict[str, list[tuple[float, float]]] = {"ou": [], "alignkit": []}
    for r in range(args.repeats):
        for side in ("ou", "alignkit") if r % 2 == 0 else ("alignkit", "ou"):
            out = args.work / "logs" / f"{tag}_{side}_{r}"
            shutil.rmtree(out, ignore_errors=True)
            build = ou_command if side == "ou" else alignkit_command
            cmd = build(args, bench, models["target"], out, retain_logs)
            times[side].append(run_timed(cmd, hub if side == "ou" else ROOT, args.work / f"{side}_{r}.log"))
            wall, cpu = times[side][-1]
            print(
                f"run {r} {side:8s} wall {wall:8.1f} s  cpu {cpu:8.1f} s  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    summary = {}
    for i, what in enumerate(("wall", "cpu")):
        ratios = sorted(a[i] / o[i] for a, o in zip(times["alignkit"], times["ou"]))
        q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
        summary[what] = {
            "ratio": statistics.median(ratios), "iqr": [q[0], q[2]], "ratios": ratios,
            "alignkit_s": statistics.median(t[i] for t in times["alignkit"]),
            "ou_s": statistics.median(t[i] for t in times["ou"]),
        }  # fmt: skip
    ours = json.loads((args.work / "logs" / f"{tag}_alignkit_0" / eval_file).read_text())
    theirs = json.loads((args.work / "logs" / f"{tag}_ou_0" / eval_file).read_text())
    diffs = compare_logs(ours, theirs)
    print(f"\n{tag}: alignkit / open-unlearning, {args.repeats} alternated pairs")
    for what, v in summary.items():
        print(f"  {what:4s} time {v['ratio']:.3f} (IQR {v['iqr'][0]:.3f}-{v['iqr'][1]:.3f}); "
              f"alignkit {v['alignkit_s']:.1f} s, open-unlearning {v['ou_s']:.1f} s")  # fmt: skip
    print(f"  load average: {os.getloadavg()}")
    print("  metric: numbers compared, largest |alignkit - open-unlearning|")
    for name, (n, d) in diffs.items():
        print(f"    {name:32s} {n:6d}  {d:.3g}")
    only = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs) - {"alignkit"})
    print(f"  only in open-unlearning's log: {only[0]}; only in alignkit's: {only[1]}")
    if args.json:
        args.json.write_text(json.dumps({"times": times, "summary": summary, "diffs": diffs}, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
