"""MUSE parity against open-unlearning's own evaluator: the same tiny checkpoint, the same items.

    python scripts/muse_ou_parity.py --corpus books   # a made-up sample in MUSE-Books' layout
    python scripts/muse_ou_parity.py --corpus news    # the MUSE-News sample in ../shared/data

1. The data: ``books`` writes a synthetic corpus in the muse_bench ``data/books`` layout (the Harry
   Potter text is copyrighted and never shipped); ``news`` copies the first ``--items`` items of every
   file of ``../shared/data/muse_news_sample``.
2. A tiny Llama (tokenizer trained on the sample) is trained for ``--train-steps`` steps on the forget
   text and the QA pairs, so generations overlap the references and ROUGE is not all zeros.
3. ``alignkit eval muse --model M --data DATA`` (protocol open-unlearning) writes its MUSE_EVAL.json.
4. open-unlearning's ``src/eval.py experiment=eval/muse/default`` runs in its own virtual environment
   on the same checkpoint. It reads ``muse-bench/MUSE-<Corpus>`` with ``datasets.load_dataset``, and a
   local folder of that name is read before the Hub, so the sample is written there in the Hub
   dataset's configs and splits (knowmem/verbmem/privleak; ``retain_qa`` is GitHub's ``retain2_qa``).
5. Every metric both logs hold is compared: the aggregate and every per-item value. The script prints
   one table and exits 1 when any difference exceeds ``--tol``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NEWS_SAMPLE = REPO.parent / "shared" / "data" / "muse_news_sample"
# The metrics open-unlearning's MUSE evaluator runs here (its default five + the MIAs and EM);
# mia_gradnorm and mia_reference need a backward pass / a reference model and are left out.
OU_METRICS = [
    "forget_knowmem_ROUGE",
    "retain_knowmem_ROUGE",
    "forget_verbmem_ROUGE",
    "privleak",
    "extraction_strength",
    "exact_memorization",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "mia_loss",
    "mia_zlib",
]
# Hub config -> {Hub split: file of the muse_bench (GitHub) layout}
HUB_LAYOUT = {
    "knowmem": {
        "forget_qa": "knowmem/forget_qa.json",
        "forget_qa_icl": "knowmem/forget_qa_icl.json",
        "retain_qa": "knowmem/retain2_qa.json",
        "retain_qa_icl": "knowmem/retain2_qa_icl.json",
    },
    "verbmem": {"forget": "verbmem/forget.json"},
    "privleak": {"forget": "privleak/forget.json", "holdout": "privleak/holdout.json"},
}

NAMES = ["Mira", "Tobin", "Elspeth", "Corwin", "Ysolde", "Barnaby", "Ilse", "Fennick"]
PLACES = ["the tower", "the greenhouse", "the cellar", "the old library", "the lake", "the great hall"]
THINGS = ["a silver key", "a cracked lantern", "a map of the stars", "a sealed letter", "a wooden flute"]


def _chapter(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        a, b = rng.sample(NAMES, 2)
        out.append(f"{a} walked to {rng.choice(PLACES)} with {b} and found {rng.choice(THINGS)}.")
    return " ".join(out)


def write_books_sample(root: Path, seed: int = 0, chapters: int = 4) -> Path:
    """A made-up corpus in MUSE-Books' layout (no text of the real books).

    raw/{forget,retain1,retain2,holdout}.json are arrays of chapters; verbmem/forget.json prompt/gt
    pairs cut from the forget text; knowmem/{forget_qa,forget_qa_icl,retain2_qa,retain2_qa_icl}.json
    (GitHub's retain2 names); privleak/{forget,holdout,retain2}.json windows that start mid-word and
    cross chapter boundaries.
    """
    rng = random.Random(seed)
    splits = ("forget", "retain1", "retain2", "holdout")
    raw = {split: [_chapter(rng, 12) for _ in range(chapters)] for split in splits}
    files: dict[str, list] = {f"raw/{k}.json": v for k, v in raw.items()}
    joined = {k: "\n\n".join(v) for k, v in raw.items()}
    files["verbmem/forget.json"] = [
        {"prompt": joined["forget"][i * 300 : i * 300 + 220], "gt": joined["forget"][i * 300 + 220 : i * 300 + 300]}
        for i in range(chapters)
    ]  # fmt: skip

    def qa(text: str, n: int) -> list[dict]:
        rows = []
        for sentence in text.split(". ")[:n]:
            who, _, rest = sentence.partition(" walked to ")
            rows.append({"question": f"Who walked to {rest.split(' with ')[0]}?", "answer": who})
        return rows

    files["knowmem/forget_qa.json"] = qa(joined["forget"], chapters)
    files["knowmem/forget_qa_icl.json"] = qa(joined["forget"][600:], 3)
    files["knowmem/retain2_qa.json"] = qa(joined["retain2"], chapters)
    files["knowmem/retain2_qa_icl.json"] = qa(joined["retain2"][600:], 3)
    for split in ("forget", "holdout", "retain2"):
        files[f"privleak/{split}.json"] = [
            joined[split][37 + 250 * i : 37 + 250 * i + 400] for i in range(chapters)
        ]
    for rel, rows in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return root


def write_news_sample(root: Path, items: int) -> Path:
    """The first ``items`` items of every JSON array of the MUSE-News sample (ICL files whole)."""
    if not NEWS_SAMPLE.is_dir():
        sys.exit(
            f"error: {NEWS_SAMPLE} is absent (the MUSE-News sample sits beside the repo in dev checkouts)."
        )
    for path in NEWS_SAMPLE.rglob("*.json"):
        rows = json.loads(path.read_text(encoding="utf-8"))
        if "_icl" not in path.name:
            rows = rows[:items]
        out = root / path.relative_to(NEWS_SAMPLE)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows), encoding="utf-8")
    return root


def write_hub_layout(data: Path, folder: Path) -> Path:
    """The sample as the Hub dataset's configs and splits (JSON Lines + a README that declares them)."""
    lines = ["---", "configs:"]
    for config, splits in HUB_LAYOUT.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, rel in splits.items():
            rows = json.loads((data / rel).read_text(encoding="utf-8"))
            if config == "privleak":
                rows = [{"text": t} for t in rows]  # the Hub's privleak rows are {"text": ...}
            out = folder / config / f"{split}.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            lines += [f"  - split: {split}", f"    path: {config}/{split}.jsonl"]
    (folder / "README.md").write_text("\n".join([*lines, "---", ""]), encoding="utf-8")
    return folder


def train_tiny(data: Path, out: Path, steps: int, seed: int = 0) -> Path:
    """A tiny Llama whose tokenizer is trained on the sample, then ``steps`` steps on its forget text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.launch.sources import dataset_texts
    from alignkit.models import build_tiny_model

    texts = [t for f in sorted(data.rglob("*.json")) for t in dataset_texts(json.loads(f.read_text()))]
    folder = build_tiny_model(texts, out, vocab_size=512, max_position_embeddings=4096, seed=seed)
    if steps <= 0:
        return folder
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    qa = [
        f"Question: {r['question']}\nAnswer: {r['answer']}"
        for name in ("forget_qa", "retain2_qa")
        for r in json.loads((data / "knowmem" / f"{name}.json").read_text())
    ]
    verb = [r["prompt"] + " " + r["gt"] for r in json.loads((data / "verbmem" / "forget.json").read_text())]
    corpus = qa + verb  # not the PrivLeak windows: the MIAs should not all read 1.0
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        text = corpus[step % len(corpus)]
        ids = tok(text, return_tensors="pt", truncation=True, max_length=512).input_ids
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def run_alignkit(model: Path, data: Path, out: Path) -> list[str]:
    cmd = [str(REPO / ".venv" / "bin" / "alignkit"), "eval", "muse", "--model", str(model), "--data", str(data),
           "--output-dir", str(out), "--no-progress"]  # fmt: skip
    if not Path(cmd[0]).exists():
        cmd[0] = shutil.which("alignkit") or "alignkit"
    subprocess.run(cmd, check=True)
    return cmd


def ou_copy(model: Path, out: Path) -> Path:
    """The checkpoint as open-unlearning's pinned transformers (4.x) reads it: the same weights and
    tokenizer.json; tokenizer_config.json names the class 4.x knows (5.x writes TokenizersBackend)."""
    shutil.copytree(model, out)
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    extra = cfg.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        cfg["additional_special_tokens"] = extra
    path.write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return out


def run_open_unlearning(
    model: Path, data: Path, corpus: str, work: Path, ou_root: Path, ou_python: Path
) -> list[str]:
    write_hub_layout(data, work / "muse-bench" / f"MUSE-{corpus}")
    model = ou_copy(model, work / "model")
    # Its MUSE config with every metric of OU_METRICS switched on (its file enables five; the rest are
    # commented out there): eval/muse.yaml's defaults list, and an experiment that selects it.
    cfg = work / "configs"
    muse = (ou_root / "configs" / "eval" / "muse.yaml").read_text(encoding="utf-8")
    head, _, tail = muse.partition("  - muse_metrics:\n")
    listed = "".join(f"    - {m}\n" for m in OU_METRICS)
    rest = tail[tail.index("\nhandler:") + 1 :]
    (cfg / "eval").mkdir(parents=True, exist_ok=True)
    (cfg / "eval" / "muse_all.yaml").write_text(
        f"{head}  - muse_metrics:\n{listed}\n{rest}", encoding="utf-8"
    )
    experiment = (ou_root / "configs" / "experiment" / "eval" / "muse" / "default.yaml").read_text(
        encoding="utf-8"
    )
    (cfg / "experiment" / "eval" / "muse").mkdir(parents=True, exist_ok=True)
    (cfg / "experiment" / "eval" / "muse" / "all_metrics.yaml").write_text(
        experiment.replace("override /eval: muse", "override /eval: muse_all"), encoding="utf-8"
    )
    cmd = [
        str(ou_python), str(ou_root / "src" / "eval.py"), f"--config-dir={cfg}", "experiment=eval/muse/all_metrics",
        f"data_split={corpus}", "task_name=parity", f"paths.output_dir={work / 'out'}",
        f"model.model_args.pretrained_model_name_or_path={model}",
        f"model.tokenizer_args.pretrained_model_name_or_path={model}",
        "model.model_args.device_map=cpu", "model.model_args.attn_implementation=eager",
        "model.model_args.torch_dtype=float32",
    ]  # fmt: skip
    # open-unlearning imports deepspeed (its RMU trainer) and lm-eval (its lm_eval evaluator, an
    # optional extra) at module level; its CPU environment has neither and the MUSE evaluator calls
    # neither. Stub modules (no package metadata, so accelerate/transformers still report deepspeed
    # unavailable) let the imports succeed; any use of them would fail loudly.
    stubs = work / "_stubs"
    for rel, text in {
        "deepspeed.py": "class DeepSpeedEngine:\n    pass\n",
        "lm_eval/__init__.py": "def simple_evaluate(*a, **k):\n    raise RuntimeError('stub')\n",
        "lm_eval/tasks.py": "class TaskManager:\n    pass\n",
        "lm_eval/models/__init__.py": "",
        "lm_eval/models/hf_vlms.py": "class HFLM:\n    pass\n",
    }.items():
        (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
        (stubs / rel).write_text(text)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(stubs)}  # fmt: skip
    subprocess.run(cmd, check=True, cwd=work, env=env)
    return cmd


def _per_item(entry: dict, prefix: str = "") -> dict[str, float]:
    """Every per-item number of a log entry, keyed ``[side/]item/field`` (open-unlearning's
    value_by_index; the MIAs hold one for each side, forget and holdout, with the side's agg_value)."""
    out = {}
    for idx, value in (entry.get("value_by_index") or {}).items():
        for key, v in (value or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[f"{prefix}{idx}/{key}"] = float(v)
    for side in ("forget", "holdout"):
        if isinstance(entry.get(side), dict):
            out |= _per_item(entry[side], f"{side}/")
            if isinstance(entry[side].get("agg_value"), int | float):
                out[f"{side}/agg_value"] = float(entry[side]["agg_value"])
    return out


def compare(ours: dict, theirs: dict, tol: float) -> list[dict]:
    rows = []
    for name in [m for m in OU_METRICS if m in ours and m in theirs]:
        a, b = ours[name], theirs[name]
        agg = abs(float(a["agg_value"]) - float(b["agg_value"]))
        pa, pb = _per_item(a), _per_item(b)
        shared = sorted(set(pa) & set(pb))
        item = max((abs(pa[k] - pb[k]) for k in shared), default=0.0)
        missing = sorted(set(pa) ^ set(pb))
        rows.append({"metric": name, "alignkit": float(a["agg_value"]), "open-unlearning": float(b["agg_value"]),
                     "agg_diff": agg, "items": len(shared), "max_item_diff": item, "unmatched_items": missing,
                     "ok": agg <= tol and item <= tol and not missing})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=["books", "news"], default="books")
    p.add_argument("--out", type=Path, help="work folder (default runs/muse_ou_parity/<corpus>)")
    p.add_argument("--ou-root", type=Path, default=Path("/work/ou/open-unlearning"))
    p.add_argument("--ou-python", type=Path, default=Path("/work/ou/venv/bin/python"))
    p.add_argument("--items", type=int, default=8, help="news: items kept of every file")
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--tol", type=float, default=1e-6)
    args = p.parse_args(argv)
    if not args.ou_python.exists() or not (args.ou_root / "src" / "eval.py").exists():
        sys.exit(
            f"error: open-unlearning not found ({args.ou_root}, {args.ou_python}); pass --ou-root/--ou-python."
        )
    corpus = {"books": "Books", "news": "News"}[args.corpus]
    out = (args.out or REPO / "runs" / "muse_ou_parity" / args.corpus).resolve()
    shutil.rmtree(out, ignore_errors=True)
    data = out / "data"
    data.mkdir(parents=True)
    write_books_sample(data) if args.corpus == "books" else write_news_sample(data, args.items)
    model = train_tiny(data, out / "model", args.train_steps)
    ak_cmd = run_alignkit(model, data, out / "alignkit")
    ou_cmd = run_open_unlearning(model, data, corpus, out / "ou", args.ou_root, args.ou_python)
    ours = json.loads((out / "alignkit" / "MUSE_EVAL.json").read_text())
    theirs = json.loads((out / "ou" / "out" / "MUSE_EVAL.json").read_text())
    rows = compare(ours, theirs, args.tol)
    print(f"\nMUSE-{corpus} parity, tiny checkpoint {model}")
    print(
        f"{'metric':24s} {'alignkit':>14s} {'open-unlearning':>16s} {'|diff|':>9s} {'items':>5s} {'max item |diff|':>16s}"
    )
    for r in rows:
        print(f"{r['metric']:24s} {r['alignkit']:14.8f} {r['open-unlearning']:16.8f} {r['agg_diff']:9.2e} "
              f"{r['items']:5d} {r['max_item_diff']:16.2e}{'' if r['ok'] else '  MISMATCH'}")  # fmt: skip
    only = sorted((set(ours) ^ set(theirs)) & set(OU_METRICS))
    if only:
        print(f"not in both logs: {only}")
    (out / "PARITY.json").write_text(
        json.dumps({"corpus": corpus, "alignkit_cmd": ak_cmd, "open_unlearning_cmd": ou_cmd, "rows": rows},
                   indent=1, default=str), encoding="utf-8")  # fmt: skip
    bad = [r["metric"] for r in rows if not r["ok"]] + only
    print(
        f"{len(rows) - len(bad) + len(only)}/{len(rows)} metrics equal to {args.tol:g}"
        + (f"; differ: {bad}" if bad else "")
    )
    return 1 if bad or math.isnan(sum(r["agg_diff"] for r in rows)) else 0


if __name__ == "__main__":
    sys.exit(main())
