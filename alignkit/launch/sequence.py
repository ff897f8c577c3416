"""Several unlearning requests in a row: MUSE's sustainability (C6) and scalability (C5) runs.

A recipe with ``forget_sequence: [f1, f2, ...]`` trains one run per request into
``output_dir/request_<k>``:

* ``sequence_mode: sustainability``: ``model_k = unlearn(model_{k-1}, f_k)``, the first from
  ``model_name_or_path`` (MUSE C6: ``sust/forget_1..4``; TOFU forget01 -> forget05 -> forget10). With
  LoRA each request's adapter is merged into its start model (``request_<k>/merged``) and the next
  request trains new adapters on that: adapters are not stacked, request k's reference is model_{k-1}
  as with full weights, and each request's own adapter stays in ``request_<k>``;
* ``sequence_mode: scalability``: ``model_k = unlearn(model_0, f_k)`` for growing forget sets
  (MUSE C5: ``scal/forget_1..4``).

With ``sequence_eval`` (``tofu`` or ``muse``) the start model and every request's model are evaluated
alike (TOFU on each request's forget split); ``SEQUENCE.json``, ``SEQUENCE.md`` (one table) and
``sequence_metrics.png`` (every metric against the request) collect the results. ``SEQUENCE.json`` is
rewritten after every request, so ``--resume_from_checkpoint true`` continues a killed sequence where
it stopped: finished requests are kept, a request that was killed mid-way resumes from its newest
checkpoint (or starts over when it saved none), and nothing a finished request wrote is recomputed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from alignkit.launch.recipe import Recipe, RecipeError, load_recipe
from alignkit.launch.sources import local_files, parse_source

SEQUENCE_FILE, SEQUENCE_TABLE, SEQUENCE_PLOT = "SEQUENCE.json", "SEQUENCE.md", "sequence_metrics.png"
MERGED = "merged"  # LoRA sustainability: request_<k>/merged holds the request's adapter merged into its start
# The recipe keys of the sequence itself (a request's own recipe drops them).
SEQUENCE_KEYS = (
    "forget_sequence",
    "retain_sequence",
    "sequence_mode",
    "sequence_eval",
    "sequence_eval_data",
    "sequence_eval_retain_logs",
    "sequence_eval_retain_models",
    "sequence_eval_max_examples",
    "sequence_eval_prompt_format",
)
# Recipe keys a request sets itself.
_REQUEST_KEYS = (
    "model_name_or_path",
    "train_dataset",
    "train_dataset_config",
    "train_dataset_split",
    "retain_dataset",
    "retain_dataset_config",
    "retain_dataset_split",
    "output_dir",
    "resume_from_checkpoint",
    "overwrite_output_dir",
)


@dataclass
class Request:
    """One unlearning request of a sequence: what it forgets, keeps, and starts from."""

    index: int  # 1-based; 0 is the start model
    forget: str  # the forget_sequence entry
    retain: str | None  # the retain_sequence entry (None: the recipe's retain_dataset)
    train_dataset: str
    train_dataset_config: str | None
    train_dataset_split: str
    retain_dataset: str | None
    retain_dataset_config: str | None
    retain_dataset_split: str
    start_model: str  # a path/Hub id; "request_<k-1>" output folder in sustainability mode
    output_dir: str


def with_split(source: str, config: str | None, split: str, entry: str) -> tuple[str, str | None, str]:
    """``(source, config, split)`` with a sequence entry in place of the split (see the recipe help)."""
    parsed = parse_source(source)
    if parsed.kind == "synthetic" and parsed.name == "tofu":
        _, _, query = source.partition("?")
        params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "split"]
        return f"synthetic:tofu?{urlencode([*params, ('split', entry)], safe='+')}", None, split
    if ":" in entry:
        config, _, split = entry.partition(":")
        return source, config, split
    return source, entry, split


def plan(recipe: Recipe) -> list[Request]:
    """Every request of the recipe's sequence, in order."""
    s = recipe.script
    out = Path(recipe.training.output_dir)
    requests = []
    for k, forget in enumerate(s.forget_sequence, start=1):
        train = with_split(s.train_dataset, s.train_dataset_config, s.train_dataset_split, forget)
        retain_entry = s.retain_sequence[k - 1] if s.retain_sequence else None
        retain = (s.retain_dataset, s.retain_dataset_config, s.retain_dataset_split)
        if retain_entry is not None:
            retain = with_split(*retain, retain_entry)
        start = recipe.model.model_name_or_path
        if s.sequence_mode == "sustainability" and k > 1:
            previous = out / f"request_{k - 1}"
            start = str(previous / MERGED if recipe.model.use_peft else previous)
        requests.append(Request(k, forget, retain_entry, *train, *retain, start, str(out / f"request_{k}")))
    return requests


def request_recipe(recipe: Recipe, request: Request, start_model: str, resume: bool) -> Recipe:
    """The recipe of one request: the sequence recipe's settings with this request's data and model."""
    values = {k: v for k, v in recipe.settings.items() if k not in SEQUENCE_KEYS and k not in _REQUEST_KEYS}
    values.update(
        model_name_or_path=start_model,
        train_dataset=request.train_dataset,
        train_dataset_config=request.train_dataset_config,
        train_dataset_split=request.train_dataset_split,
        retain_dataset=request.retain_dataset,
        retain_dataset_config=request.retain_dataset_config,
        retain_dataset_split=request.retain_dataset_split,
        output_dir=request.output_dir,
        overwrite_output_dir=not resume,  # a request without a checkpoint starts over
    )
    if resume:
        values["resume_from_checkpoint"] = "true"
    where = f"{recipe.path or 'recipe'}, request {request.index} ({request.forget})"
    try:
        one = load_recipe(None, values={k: v for k, v in values.items() if v is not None}, set_env=False)
    except RecipeError as err:
        raise RecipeError(f"{where}: {err}") from None
    one.path = recipe.path
    return one


# ------------------------------------------------------------------------------------------ state


def _state_path(recipe: Recipe) -> Path:
    return Path(recipe.training.output_dir) / SEQUENCE_FILE


def _new_state(recipe: Recipe, requests: list[Request]) -> dict:
    s = recipe.script
    return {
        "mode": s.sequence_mode,
        "method": recipe.method,
        "start_model": recipe.model.model_name_or_path,
        "eval": s.sequence_eval,
        "planned": [asdict(r) for r in requests],
        "baseline": None,  # the start model's evaluation (request 0)
        "done": [],  # finished requests, in order
    }


def load_state(recipe: Recipe, requests: list[Request], resume: bool) -> dict:
    """The sequence so far (resume), or a fresh one; refuses a folder holding another sequence."""
    path = _state_path(recipe)
    out = Path(recipe.training.output_dir)
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()) and not recipe.script.overwrite_output_dir:
            held = ", ".join(sorted(p.name for p in out.iterdir())[:3])
            raise RecipeError(
                f"output_dir {out} already holds files ({held}, ...) and no {SEQUENCE_FILE}; pass "
                "--overwrite_output_dir true to replace them, or another --output_dir."
            )
        return _new_state(recipe, requests)
    if not resume:
        if recipe.script.overwrite_output_dir:
            return _new_state(recipe, requests)
        raise RecipeError(
            f"output_dir {out} holds a sequence ({SEQUENCE_FILE}); pass --resume_from_checkpoint true to "
            "continue it, --overwrite_output_dir true to start over, or another --output_dir."
        )
    state = json.loads(path.read_text(encoding="utf-8"))
    fresh = _new_state(recipe, requests)
    for key in ("mode", "method", "start_model", "eval"):
        if state.get(key) != fresh[key]:
            raise RecipeError(
                f"--resume_from_checkpoint: {path} records {key} {state.get(key)!r}, this recipe has "
                f"{fresh[key]!r}; resume with the same recipe, or use another --output_dir."
            )
    for old, new in zip(state["done"], fresh["planned"], strict=False):
        if old["request"]["forget"] != new["forget"] or old["request"]["retain"] != new["retain"]:
            raise RecipeError(
                f"--resume_from_checkpoint: request {new['index']} of {path} forgot {old['request']['forget']!r} "
                f"(retain {old['request']['retain']!r}), this recipe asks {new['forget']!r} (retain "
                f"{new['retain']!r}); resume with the same sequence (it may only grow at the end)."
            )
    state["planned"] = fresh["planned"]
    return state


def save_state(recipe: Recipe, state: dict) -> None:
    from alignkit.launch.runner import write_json

    path = _state_path(recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    write_json(tmp, state, recipe)
    os.replace(tmp, path)  # a kill never leaves a half-written state


# ------------------------------------------------------------------------------------------ evaluation


def _eval_data(recipe: Recipe) -> str:
    s = recipe.script
    if s.sequence_eval_data:
        return s.sequence_eval_data
    files = local_files(s.train_dataset)
    if files is None or s.sequence_eval != "tofu":
        raise RecipeError(
            f"`sequence_eval: {s.sequence_eval}` needs `sequence_eval_data` (the benchmark's folder or Hub id); "
            f"it is only inferred for a local TOFU-format train_dataset."
        )
    return files


def evaluate(recipe: Recipe, model: str, request: Request, out: Path, progress) -> dict[str, Any]:
    """The request's model evaluated as every other request's; returns the benchmark's summary."""
    s = recipe.script

    def of_request(given: list[str] | None) -> str | None:  # one for every request, or one each
        return None if not given else given[0] if len(given) == 1 else given[request.index - 1]

    common = dict(
        data=_eval_data(recipe),
        retain_logs=of_request(s.sequence_eval_retain_logs),
        retain_model=of_request(s.sequence_eval_retain_models),
        max_examples=s.sequence_eval_max_examples,
        output_dir=out,
        progress=progress,
    )
    if s.sequence_eval == "tofu":
        from alignkit.eval.tofu import evaluate_tofu

        forget_split = request.train_dataset_config or parse_source(request.train_dataset).params.get("split")
        result = evaluate_tofu(
            model, forget_split=forget_split, prompt_format=s.sequence_eval_prompt_format, **common
        )
        return dict(result.summary)
    import warnings

    from alignkit.eval.muse import evaluate_muse

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PrivLeak: no retrained model")  # said once, in the table
        result = evaluate_muse(model, **common)
    return dict(result.summary)


# ------------------------------------------------------------------------------------------ running


def _resume_flag(recipe: Recipe) -> bool:
    """``--resume_from_checkpoint true`` continues the sequence; a checkpoint folder means nothing here."""
    value = recipe.training.resume_from_checkpoint
    if value is None or str(value).lower() in ("false", "no", "0", "none", ""):
        return False
    if str(value).lower() in ("true", "last", "latest", "1", "yes"):
        return True
    raise RecipeError(
        f"`resume_from_checkpoint: {value}`: a sequence resumes as a whole; pass `true` (each request "
        "continues from its own newest checkpoint)."
    )


def run_sequence(recipe: Recipe, *, console=None) -> dict:
    """Train (and evaluate) every request; returns the sequence state written to ``SEQUENCE.json``."""
    from alignkit.launch.runner import _is_main, run_recipe
    from alignkit.trainers.checkpoints import newest_complete

    # Under a multi-process launch every rank runs every request (DDP/ZeRO, as one run); rank 0 alone
    # writes SEQUENCE.json and evaluates, the others wait for it at a barrier (the process group's
    # timeout bounds an evaluation). The group lives across requests and is closed after the last.
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    main = _is_main()
    console = console if main else None
    if distributed:
        from accelerate import PartialState

        group = PartialState()
    sync = group.wait_for_everyone if distributed else lambda: None
    resume = _resume_flag(recipe)
    requests = plan(recipe)
    state = load_state(recipe, requests, resume)
    sync()  # every rank has read the old state before rank 0 rewrites it
    if main:
        save_state(recipe, state)
    progress = console is not None
    base_path = state["done"][0]["run"]["base_model_path"] if state["done"] else None
    for request in requests[len(state["done"]) :]:
        start = request.start_model
        if recipe.script.sequence_mode == "scalability" and base_path is not None:
            start = base_path  # the same start model for every size (a synthetic model built once)
        partial = Path(request.output_dir)
        resumable = partial.is_dir() and newest_complete(partial)[0] is not None
        if console is not None:
            verb = "resuming" if resumable else "training"
            console.print(
                f"[bold]request {request.index}/{len(requests)}[/] ({state['mode']}): {verb} {request.forget}"
                f"{f' (retain {request.retain})' if request.retain else ''} from {start}",
                markup=True,
            )
        info = run_recipe(
            request_recipe(recipe, request, start, resumable), console=console, end=not distributed
        )
        evaluated = request.output_dir
        if recipe.model.use_peft and recipe.script.sequence_mode == "sustainability":
            evaluated = str(partial / MERGED)  # the next request starts here, and is scored here
            if main:
                merge_adapter(request.output_dir, evaluated)
            sync()
        if base_path is None:
            base_path = info["base_model_path"]
        entry = {
            "request": asdict(request) | {"start_model": start},
            "run": {
                "output_dir": request.output_dir,
                "base_model_path": info["base_model_path"],
                "rows": info["datasets"]["train"]["rows"],
                "retain_rows": (info["datasets"].get("retain") or {}).get("rows"),
                "train_loss": info["train"].get("train_loss"),
                "global_step": info["train"].get("global_step"),
                "resumed_from": info["train"].get("resumed_from"),
            },
        }
        if recipe.script.sequence_eval and main:
            if state["baseline"] is None:  # the start model, on the first request's eval data
                state["baseline"] = {
                    "model": base_path,
                    "metrics": evaluate(
                        recipe,
                        base_path,
                        request,
                        Path(recipe.training.output_dir) / "request_0" / "eval",
                        progress,
                    ),
                }
            entry["metrics"] = evaluate(recipe, evaluated, request, partial / "eval", progress)
        state["done"].append(entry)
        if main:
            save_state(recipe, state)
        sync()  # the next request starts once rank 0 has evaluated and recorded this one
    if recipe.script.sequence_eval and main:
        write_outputs(recipe, state)
        if console is not None:
            console.print(f"sequence table: {Path(recipe.training.output_dir) / SEQUENCE_TABLE}")
    if distributed:
        sync()
        group.destroy_process_group()
    return state


def merge_adapter(adapter_dir: str, out: str) -> None:
    """A LoRA request's adapter merged into the model it trained on (its adapter_config's base), saved
    with the tokenizer: the next request trains fresh adapters on it, and its frozen reference is this
    merged model, as a full-weight sequence's reference is the previous request's model."""
    from transformers import AutoTokenizer

    from alignkit.models.adapters import save_merged

    save_merged(adapter_dir, out)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out)


# ------------------------------------------------------------------------------------------ outputs


def table_rows(state: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sequence table: one row per request (0 = the start model)."""
    from alignkit.formatting import format_number

    rows_in = []
    if state.get("baseline"):
        rows_in.append(("0", "(start model)", "", state["baseline"]["metrics"]))
    for e in state["done"]:
        r = e["request"]
        rows_in.append((str(r["index"]), r["forget"], str(e["run"]["rows"]), e.get("metrics") or {}))
    names = metric_names(state)
    header = ["request", "forget", "forget rows", *names]
    rows = [
        [i, f, n, *(format_number(m.get(name), sci=name == "forget_quality") for name in names)]
        for i, f, n, m in rows_in
    ]
    return header, rows


def metric_names(state: dict) -> list[str]:
    """Every metric with a number in some row, in the order the benchmark writes them."""
    metrics = [state["baseline"]["metrics"]] if state.get("baseline") else []
    metrics += [e.get("metrics") or {} for e in state["done"]]
    names: list[str] = []
    for m in metrics:
        names += [k for k, v in m.items() if isinstance(v, int | float) and k not in names]
    return names


def write_outputs(recipe: Recipe, state: dict) -> None:
    """SEQUENCE.md (the table) and sequence_metrics.png (every metric against the request)."""
    out = Path(recipe.training.output_dir)
    header, rows = table_rows(state)
    x_name = "request" if state["mode"] == "sustainability" else "forget-set size (request)"
    lines = [
        f"# {recipe.method} {state['mode']}: {len(state['done'])} requests from {state['start_model']}",
        "",
        f"Each row is evaluated alike ({state['eval']}); x axis of {SEQUENCE_PLOT}: {x_name}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"![every metric against the request]({SEQUENCE_PLOT})",
        "",
    ]
    (out / SEQUENCE_TABLE).write_text("\n".join(lines), encoding="utf-8")
    plot(state, out / SEQUENCE_PLOT)


def plot(state: dict, path: Path) -> Path:
    """One panel per metric: its value after each request (0 = the start model)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metric_names(state)
    points = []
    if state.get("baseline"):
        points.append((0, "start", state["baseline"]["metrics"]))
    points += [(e["request"]["index"], e["request"]["forget"], e.get("metrics") or {}) for e in state["done"]]
    cols = min(4, max(1, len(names)))
    nrows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.6 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        xs = [i for i, _, m in points if isinstance(m.get(name), int | float)]
        ys = [m[name] for _, _, m in points if isinstance(m.get(name), int | float)]
        ax.plot(xs, ys, marker="o")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([i for i, _, _ in points], [label for _, label, _ in points], fontsize=7)
        if name == "forget_quality" and ys and all(y > 0 for y in ys):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"{state['method']} {state['mode']} ({state['eval']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
