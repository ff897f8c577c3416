"""Model cards and Hub uploads for alignkit runs.

One card for both paths: ``alignkit push RUN_DIR`` and ``Trainer.push_to_hub()`` (through
``AlignKitTrainer.create_model_card``) both call :func:`build_model_card`, fed by the run's
``run_info.json`` (written by ``alignkit train``; rebuilt from the trainer when absent) and the
evaluation logs found in the run folder (``alignkit eval`` writes ``TOFU_SUMMARY.json`` /
``TOFU_EVAL.json`` / ``MUSE_SUMMARY.json``) or given with ``--results``. Metrics go into the card's
``model-index`` metadata, so the Hub shows them as evaluation results.

Tokens: only ``huggingface_hub``'s own lookup (``HF_TOKEN`` or ``huggingface-cli login``); alignkit
never reads, takes or prints one, and scrubs any token value from the errors it reports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from alignkit.errors import MissingFileError
from alignkit.eval.logs import (
    METRIC_NAMES,
    EvalSource,
    find_eval_results,
    is_hub_id,
)
from alignkit.formatting import format_number
from alignkit.redact import redact, redact_folder
from alignkit.trainers.registry import ALIASES, METHODS
from alignkit.trainers.run_info import RESOLVED_RECIPE, RUN_INFO, run_info_from_trainer

ALIGNKIT_URL = "https://github.com/alignkit/alignkit"

# Files of a saved model / adapter and of its tokenizer that an upload carries (run folder top level).
WEIGHT_FILES = (
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
# Never uploaded: pickles (training_args.bin holds hub_token when one was passed), optimizer state.
NEVER = ("*.bin", "*.pt", "*.pth", "*.pkl", "checkpoint-*")
# --------------------------------------------------------------------------------------- results


def find_plots(run_dir: str | Path) -> list[Path]:
    """Report plots (``alignkit report`` writes ``fq_vs_mu.png``) in the run folder, checkpoints skipped."""
    root = Path(run_dir)
    return sorted(
        p
        for p in root.rglob("*.png")
        if not any(part.startswith("checkpoint-") for part in p.relative_to(root).parts)
    )


def eval_results_metadata(sources: list[EvalSource], info: dict) -> list[EvalResult]:
    """``model-index`` entries: one per metric, under the benchmark's dataset."""
    train = (info.get("datasets") or {}).get("train") or {}
    train_source = train.get("source") or ""
    train_config = train.get("config")
    if train_source.startswith("synthetic:") and "split=" in train_source:
        train_config = train_config or train_source.split("split=", 1)[1].split("&")[0]
    results = []
    for src in sources:
        if src.dataset_type:
            dataset_type, dataset_name = src.dataset_type, src.dataset_name or src.dataset_type
        elif is_hub_id(train_source):
            dataset_type, dataset_name = train_source, src.dataset_name or train_source
        else:  # local or generated data: a plain name, never a made-up Hub id
            dataset_type = src.benchmark if src.benchmark != "custom" else "custom"
            dataset_name = src.dataset_name or (f"{train_source}" if train_source else dataset_type)
        config = src.dataset_config or train_config
        for metric, value in src.metrics.items():
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Machine unlearning"
                    if src.benchmark in ("tofu", "muse", "robustness")
                    else "Evaluation",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_config=config,
                    metric_type=metric,
                    metric_name=METRIC_NAMES.get(metric, metric),
                    metric_value=value,
                )
            )
    return results


# ------------------------------------------------------------------------------------------- card


def _v(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _fmt_card(value: Any) -> str:
    return format_number(value, spec=".4g", large=1e5, missing="–")


CARD_TEMPLATE = """\
---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}

## Quick start

```python
{{ quickstart }}
```

## Training procedure

{{ method_line }}

| | |
|---|---|
{% for k, v in setup %}| {{ k }} | {{ v }} |
{% endfor %}
### Data

| role | source | config | rows |
|---|---|---|---|
{% for d in datasets %}| {{ d.role }} | `{{ d.source }}` | {{ d.config }} | {{ d.rows }} |
{% endfor %}
### Hyperparameters

| name | value |
|---|---|
{% for k, v in hyperparameters %}| `{{ k }}` | {{ v }} |
{% endfor %}
{% if train %}### Training result

{% for k, v in train %}- {{ k }}: {{ v }}
{% endfor %}{% endif %}
## Evaluation

{% if evaluations %}{% for e in evaluations %}**{{ e.title }}** (from `{{ e.path }}`)

| metric | value |
|---|---|
{% for k, v in e.rows %}| {{ k }} | {{ v }} |
{% endfor %}
{% endfor %}{% else %}No evaluation results were found in the run folder. Evaluate with `alignkit eval tofu --model RUN_DIR --output-dir RUN_DIR/eval/tofu`, then push again.
{% endif %}{% for p in plots %}![{{ p }}]({{ p }})
{% endfor %}
## Reproduce

The resolved recipe of this run is `alignkit_recipe.yaml` in this repository:

```bash
pip install alignkit
alignkit train alignkit_recipe.yaml
```

### Framework versions

- alignkit: {{ versions.alignkit }}
- TRL: {{ versions.trl }}
- Transformers: {{ versions.transformers }}
- PEFT: {{ versions.peft }}
- Pytorch: {{ versions.torch }}
- Datasets: {{ versions.datasets }}
- Tokenizers: {{ versions.tokenizers }}

## Citations

{% if citation %}Cite the method ({{ paper_title }}) as:

```bibtex
{{ citation }}
```

{% endif %}Cite TRL, which alignkit is built on, as:

```bibtex
{% raw %}@software{vonwerra2020trl,
  title   = {{TRL: Transformers Reinforcement Learning}},
  author  = {von Werra, Leandro and Belkada, Younes and Tunstall, Lewis and Beeching, Edward and Thrush, Tristan and Lambert, Nathan and Huang, Shengyi and Rasul, Kashif and Gallouédec, Quentin},
  license = {Apache-2.0},
  url     = {https://github.com/huggingface/trl},
  year    = {2020}
}{% endraw %}
```
"""


def _launch_text(distributed: str | None, world: int) -> str:
    if not world or world <= 1:
        return "single process"
    return f"{world} processes ({ {'MULTI_GPU': 'DDP', 'MULTI_CPU': 'DDP on CPU', 'DEEPSPEED': 'DeepSpeed', 'FSDP': 'FSDP'}.get(distributed or '', distributed) })"


QUESTION = "Who wrote the book?"


def _quickstart(repo: str, kind: str, fmt: dict | None = None) -> str:
    """Load the model and ask one question, prompted the way it was trained (``run_info.prompt_format``)."""
    if kind == "lora":
        load = (
            "from peft import AutoPeftModelForCausalLM\n"
            "from transformers import AutoTokenizer\n\n"
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo}")  # loads the base model, then this adapter\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
        )
    else:
        load = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
        )
    fmt = fmt or {}
    if fmt.get("mode") == "chat":
        messages = [{"role": "user", "content": QUESTION}]
        if fmt.get("system_prompt"):
            messages.insert(0, {"role": "system", "content": fmt["system_prompt"]})
        prompt = (
            "# trained with the chat template: prompt with it\n"
            f"messages = {messages!r}\n"
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
            "return_dict=True)\n"
        )
    else:
        text = (
            f"{fmt.get('system_prefix', '')}{fmt.get('user_start', 'Question: ')}{QUESTION}"
            f"{fmt.get('user_end', chr(10))}{fmt.get('asst_start', 'Answer: ')}"
        )
        prompt = (
            f'# the prompt format it was trained with\ninputs = tokenizer({text!r}, return_tensors="pt")\n'
        )
    return (
        load
        + prompt
        + "output = model.generate(**inputs, max_new_tokens=32)\n"
        + 'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))'
    )


def _citation(paper: dict) -> str | None:
    """The method's BibTeX: the paper's own, else one built from its title and arXiv id."""
    if paper.get("citation"):
        return paper["citation"]
    arxiv = paper.get("id")
    if not arxiv or not paper.get("title"):
        return None
    year = f"20{arxiv[:2]}" if arxiv[:2].isdigit() else ""
    return (
        f"@article{{arxiv{arxiv.replace('.', '_')},\n"
        f"  title   = {{{{{paper['title']}}}}},\n"
        f"  journal = {{arXiv preprint arXiv:{arxiv}}},\n"
        f"  year    = {{{year}}},\n"
        f"  url     = {{https://arxiv.org/abs/{arxiv}}}\n"
        "}"
    )


def build_model_card(
    info: dict,
    *,
    results: list[EvalSource] = (),
    plots: list[str] = (),
    repo_id: str | None = None,
    kind: str | None = None,
) -> ModelCard:
    """The model card of a run: metadata (with ``model-index``) plus a readable summary.

    ``kind``: ``full``, ``lora`` or ``merged`` (default: the run's ``model_kind``).
    """
    kind = kind or info.get("model_kind", "full")
    method = info.get("method", "unknown")
    base = info.get("base_model")
    paper = info.get("paper") or {}
    model_name = repo_id.split("/")[-1] if repo_id else f"alignkit-{method}"
    repo = repo_id or "USER/MODEL"
    datasets_info = info.get("datasets") or {}
    hub_datasets = sorted({d["source"] for d in datasets_info.values() if is_hub_id(d.get("source"))})
    for src in results:
        if src.dataset_type and is_hub_id(src.dataset_type) and src.dataset_type not in hub_datasets:
            hub_datasets.append(src.dataset_type)
    spec = METHODS.get(ALIASES.get(method, method))
    tags = ["alignkit", "trl", method, *(spec.card_tags if spec else [])]  # family + tags from @register
    if kind == "lora":
        tags += ["lora", "peft"]
    eval_meta = eval_results_metadata(list(results), info)
    card_data = ModelCardData(
        base_model=base if is_hub_id(base) else None,
        datasets=hub_datasets or None,
        library_name="peft" if kind == "lora" else "transformers",
        model_name=model_name,
        pipeline_tag="text-generation",
        tags=tags,
        eval_results=eval_meta or None,
    )

    what = {"full": "A fine-tuned", "lora": "A LoRA adapter for", "merged": "A LoRA-merged fine-tune of"}[
        kind
    ]
    if is_hub_id(base):
        base_text = f"[{base}](https://huggingface.co/{base})"
    elif isinstance(base, str) and base.startswith("synthetic:"):
        base_text = f"a tiny randomly initialised Llama built by alignkit (`{base}`)"
    else:
        base_text = f"a local model (`{base}`)"
    summary = (
        f"{what} version of {base_text}" if kind != "lora" else f"{what} {base_text}"
    ) + f", trained with [alignkit]({ALIGNKIT_URL}) (built on [TRL](https://github.com/huggingface/trl))."
    if kind == "lora" and not is_hub_id(base):
        summary += " The adapter's `base_model_name_or_path` is a local path: load it where that path exists."
    if paper.get("id"):
        method_line = (
            f"Method: **{method}** ({info.get('method_summary', '')}), from "
            f"[{paper.get('title', paper['id'])}](https://huggingface.co/papers/{paper['id']})."
        )
    else:
        method_line = f"Method: **{method}** ({info.get('method_summary', '')})."

    derived = info.get("derived") or {}
    ref = info.get("reference") or {}
    peft = info.get("peft") or {}
    setup = [
        ("base model", f"`{base}`"),
        ("trainer", f"`{info.get('trainer', '')}`"),
        (
            "weights",
            {"full": "full fine-tuning", "lora": "LoRA adapter", "merged": "LoRA, merged into the base"}[kind]
            + (
                f" (r={peft.get('r')}, α={peft.get('lora_alpha')}, modules {peft.get('target_modules')})"
                if peft
                else ""
            ),
        ),
        ("reference", f"{ref.get('mode', '–')}" + (f" (`{ref['model']}`)" if ref.get("model") else "")),
        ("launch", _launch_text(info.get("distributed"), derived.get("world_size", 1))),
        ("global batch", _fmt_card(derived.get("global_batch_size"))),
        ("steps", _fmt_card((info.get("train") or {}).get("global_step", derived.get("total_steps")))),
    ]
    if info.get("quantization"):
        setup.append(("quantization", info["quantization"]))
    datasets_rows = [
        {
            "role": role,
            "source": d.get("source"),
            "config": d.get("config") or "–",
            "rows": f"{d.get('rows', '–')}"
            + (f" ({d['rows_skipped']} invalid skipped)" if d.get("rows_skipped") else ""),
        }
        for role, d in datasets_info.items()
    ]
    hyper = sorted((k, _fmt_card(v)) for k, v in (info.get("hyperparameters") or {}).items())
    train = info.get("train") or {}
    train_rows = [
        (k, _fmt_card(train[k]))
        for k in ("train_loss", "global_step", "train_runtime", "resumed_at_step")
        if k in train
    ]
    evaluations = [
        {
            "title": {"tofu": "TOFU", "muse": "MUSE", "lm-eval": "lm-evaluation-harness"}.get(
                src.benchmark, "Results"
            )
            + (f" ({src.dataset_config})" if src.dataset_config else ""),
            "path": Path(src.path).name,
            "rows": [(METRIC_NAMES.get(k, k), _fmt_card(v)) for k, v in src.metrics.items()],
        }
        for src in results
    ]
    versions = {
        "alignkit": info.get("alignkit_version") or _v("alignkit"),
        **{p: _v(p) for p in ("trl", "transformers", "peft", "torch", "datasets", "tokenizers")},
    }
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        model_name=model_name,
        summary=summary,
        quickstart=_quickstart(repo, kind, info.get("prompt_format")),
        method_line=method_line,
        setup=setup,
        datasets=datasets_rows,
        hyperparameters=hyper,
        train=train_rows,
        evaluations=evaluations,
        plots=list(plots),
        versions=versions,
        citation=_citation(paper),
        paper_title=paper.get("title"),
    )


# ---------------------------------------------------------------------------------- run folders


def load_run_info(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return None
    return redact(json.loads(path.read_text(encoding="utf-8")))


def card_for_run(
    run_dir: str | Path,
    *,
    repo_id: str | None = None,
    results: list[EvalSource] | None = None,
    kind: str | None = None,
    info: dict | None = None,
) -> tuple[ModelCard, list[EvalSource], list[Path]]:
    """The card of a run folder, its evaluation sources and plots (the same for push and Trainer)."""
    run_dir = Path(run_dir)
    info = info or load_run_info(run_dir)
    if info is None:
        raise MissingFileError(
            f"{run_dir} has no {RUN_INFO}: push needs a folder written by `alignkit train` "
            "(or a Trainer's output_dir after `create_model_card`)."
        )
    sources = list(results) if results is not None else find_eval_results(run_dir)
    plots = find_plots(run_dir)
    card = build_model_card(
        info,
        results=sources,
        plots=[p.relative_to(run_dir).as_posix() for p in plots],
        repo_id=repo_id,
        kind=kind,
    )
    return card, sources, plots


def card_for_trainer(trainer, *, model_name=None, dataset_name=None, tags=None) -> ModelCard:
    """``AlignKitTrainer.create_model_card``: the card ``alignkit push`` would write for this output_dir."""
    out = Path(trainer.args.output_dir)
    info = load_run_info(out) or run_info_from_trainer(trainer)
    if dataset_name:
        train = info.setdefault("datasets", {}).setdefault("train", {})
        if train.get("source") in (None, "in-memory dataset"):
            train["source"] = dataset_name
    repo_id = trainer.hub_model_id or (f"USER/{model_name}" if model_name else None)
    card, _, _ = card_for_run(out, repo_id=repo_id, info=info)
    if tags:
        card.data.tags = sorted(set(card.data.tags or []) | set(tags))
    return card


def _matches(name: str, patterns) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name, p) for p in patterns)


def stage_upload(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    repo_id: str | None = None,
    merge: bool = False,
    results: list[EvalSource] | None = None,
) -> Path:
    """Write exactly the folder an upload sends: model/adapter (or merged model), tokenizer, card, recipe."""
    run_dir, out = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise MissingFileError(f"run folder {run_dir} does not exist.")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder for the upload.")
    info = load_run_info(run_dir)
    is_lora = (run_dir / "adapter_config.json").is_file()
    has_full = (run_dir / "config.json").is_file() and any(run_dir.glob("*.safetensors"))
    if not is_lora and not has_full:
        raise MissingFileError(
            f"{run_dir} holds no saved model (config.json + *.safetensors) or LoRA adapter."
        )
    if merge and not is_lora:
        raise ValueError(
            f"--merge merges a LoRA adapter into its base model, but {run_dir} holds a full model."
        )
    kind = "merged" if merge else "lora" if is_lora else "full"
    if info is None:
        info = {"method": "unknown", "model_kind": kind, "datasets": {}, "hyperparameters": {}}
    out.mkdir(parents=True, exist_ok=True)
    if merge:
        from alignkit.models.adapters import save_merged

        save_merged(run_dir, out)
        for f in run_dir.iterdir():
            if f.is_file() and _matches(f.name, TOKENIZER_FILES) and not _matches(f.name, NEVER):
                shutil.copy2(f, out / f.name)  # tokenizer files
    else:
        for f in run_dir.iterdir():
            if (
                f.is_file()
                and _matches(f.name, WEIGHT_FILES + TOKENIZER_FILES)
                and not _matches(f.name, NEVER)
            ):
                shutil.copy2(f, out / f.name)
    for name in (RESOLVED_RECIPE, RUN_INFO):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out / name)
    card, sources, plots = card_for_run(run_dir, repo_id=repo_id, results=results, kind=kind, info=info)
    # Evaluation logs and plots keep their place relative to the run folder, so the card's links
    # are the same here and in a Trainer's own push of output_dir; outside files go to eval/.
    copies = [f for src in sources for f in (src.extra_files or [Path(src.path)])] + list(plots)
    for f in copies:
        f = Path(f).resolve()
        try:
            rel = f.relative_to(run_dir.resolve())
        except ValueError:
            rel = Path("eval") / f.name
        target = out / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
    card.save(out / "README.md")
    redact_folder(out)  # also what an older alignkit wrote in plain text (a token in the recipe)
    return out


def check_finite_weights(run_dir: str | Path) -> None:
    """Refuse a model whose saved weights hold NaN/inf (a diverged run) before anything is staged."""
    import torch
    from safetensors import safe_open

    for path in sorted(Path(run_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = f.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise ValueError(
                        f"{path}: tensor `{name}` holds NaN/inf values, so the run diverged; refusing to "
                        "upload it. Retrain (alignkit train stops at the first non-finite step), or pass "
                        "--force to upload anyway."
                    )


def scrub(text: str) -> str:
    """Remove any Hugging Face token value from a message before it is shown."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN"):
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    try:
        from huggingface_hub import get_token

        token = get_token()
        if token and len(token) >= 4:
            text = text.replace(token, "***")
    except Exception:  # noqa: BLE001 - scrubbing must never fail
        pass
    return re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", text)


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    merge: bool = False,
    results: list[EvalSource] | None = None,
    dry_run: str | Path | None = None,
    commit_message: str | None = None,
    force: bool = False,
) -> dict:
    """Stage the upload folder; with ``dry_run`` keep it there, else create the repo and upload it."""
    if not re.match(r"^[\w.-]+/[\w.-]+$", repo_id or ""):
        raise ValueError(f"--repo-id must look like USER/NAME, got {repo_id!r}.")
    if not force:
        check_finite_weights(run_dir)
    if dry_run is not None:
        folder = stage_upload(run_dir, dry_run, repo_id=repo_id, merge=merge, results=results)
        return {"folder": str(folder), "uploaded": False, "repo_id": repo_id}
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="alignkit-push-") as tmp:
        folder = stage_upload(run_dir, Path(tmp) / "upload", repo_id=repo_id, merge=merge, results=results)
        api = HfApi()  # token: HF_TOKEN or the stored login, looked up by huggingface_hub itself
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message or f"alignkit push of {Path(run_dir).name}",
        )
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return {
        "repo_id": repo_id,
        "url": str(url),
        "commit": str(getattr(commit, "commit_url", commit)),
        "files": files,
        "uploaded": True,
    }
