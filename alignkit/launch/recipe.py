"""Recipes: a flat YAML of overrides, parsed with TRL's ``TrlParser`` into three dataclasses.

``RecipeArguments`` (method, datasets, reference/tokenizer paths), the method's config class
(``AlignKitConfig`` subclass: training arguments and the method's hyperparameters) and TRL's
``ModelConfig`` (model id, dtype, LoRA and quantization). The method named in the recipe (or by
``--method``) picks the config class, so ``--help`` and validation know its fields.

Values come from, lowest first: the dataclass defaults, the method variant's overrides (``npo_rt``
sets ``retain_loss: nll``), what the machine needs (``use_cpu`` without CUDA), the YAML, the
command line. Unknown or misspelled keys, in the YAML or on the command line, are errors that name
the key and suggest the closest one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig
from trl.scripts.utils import TrlParser

from alignkit.launch.recipe_file import (
    RecipeError,
    cli_keys,
    read_recipe_file,
    scan_cli_value,
    unknown_key_message,
)
from alignkit.launch.sources import SourceError, parse_source
from alignkit.models.source import unreachable_hub_source
from alignkit.trainers.run_info import RESOLVED_RECIPE, plain

__all__ = [
    "RESOLVED_RECIPE",
    "Recipe",
    "RecipeArguments",
    "RecipeError",
    "load_recipe",
    "read_recipe_file",
    "validate",
]

SEQUENCE_MODES = ("sustainability", "scalability")  # forget_sequence: alignkit.launch.sequence
SEQUENCE_EVALS = ("tofu", "muse")
RESERVED_KEYS = ("env",)  # TrlParser's: a mapping exported to os.environ


def fields_by_method() -> dict[str, list[str]]:
    """Every method's config fields (to say which methods have a key that this one lacks)."""
    from alignkit.trainers import METHODS

    return {name: [f.name for f in dataclasses.fields(spec.config_cls)] for name, spec in METHODS.items()}


def _unknown_key_message(key: str, known: dict, method: str, where: str) -> str:
    return unknown_key_message(key, known, method, where, fields_by_method())


def _methods_help() -> str:
    from alignkit.trainers import METHODS

    return ", ".join(sorted(METHODS))


@dataclass
class RecipeArguments:
    """What a run trains on: the method, the datasets, and optional reference/tokenizer paths."""

    method: str | None = field(
        default=None,
        metadata={"help": "Method to run (the registry name, e.g. npo, simnpo, graddiff). Required."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an output_dir that already holds files (an earlier run is replaced). "
            "Without it such a run is refused, unless it resumes (--resume_from_checkpoint)."
        },
    )
    resume_with_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "Resume (--resume_from_checkpoint) although the method or optimizer settings differ from "
            "the run's run_info.json (the restored optimizer and scheduler keep their state). Without it "
            "such a resume is refused."
        },
    )
    train_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training rows (the forget set for unlearning): a Hub id, a local file or folder, or "
            "synthetic:NAME?key=value (e.g. synthetic:tofu?num_people=20&split=forget10). Required."
        },
    )
    train_dataset_config: str | None = field(
        default=None,
        metadata={"help": "Config of `train_dataset` (a Hub config, or <config>.json in a folder)."},
    )
    train_dataset_split: str = field(default="train", metadata={"help": "Split of `train_dataset`."})
    retain_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Retain rows for the retain term (retain_loss nll/kl); same forms as train_dataset."
        },
    )
    retain_dataset_config: str | None = field(default=None, metadata={"help": "Config of `retain_dataset`."})
    retain_dataset_split: str = field(default="train", metadata={"help": "Split of `retain_dataset`."})
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Rows for in-training evaluation (set eval_strategy too)."}
    )
    eval_dataset_config: str | None = field(default=None, metadata={"help": "Config of `eval_dataset`."})
    eval_dataset_split: str = field(default="train", metadata={"help": "Split of `eval_dataset`."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to use (default: the model's own)."}
    )
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Reference model for ref_mode=model (default: a frozen copy of the starting model, or "
            "under ZeRO-3 the starting model reloaded from its path)."
        },
    )
    dataset_preset: str | None = field(
        default=None,
        metadata={
            "help": "Read train_dataset/eval_dataset in a public dataset's published layout and map it to "
            "alignkit's rows: ultrafeedback, ultrafeedback_binarized, nectar, helpsteer2, hh_rlhf, "
            "pku_saferlhf, gsm8k, sdpo; options as a query, e.g. 'ultrafeedback?score=helpfulness' "
            "(alignkit.data.presets)."
        },
    )
    text_chunk_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Split raw-text (`text`) rows into windows of this many tokens before training "
            "(MUSE trains on 2048-token windows of its corpus). Default: no chunking."
        },
    )
    lm_eval_tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "lm-evaluation-harness tasks to run during training every lm_eval_steps steps, logged as "
            "lm_eval/<task>/<metric> (e.g. wmdp_bio wmdp_cyber mmlu: how the WMDP paper tunes RMU). "
            "Needs pip install 'alignkit[lm-eval]'; single process."
        },
    )
    lm_eval_steps: int = field(default=50, metadata={"help": "Optimizer steps between lm_eval_tasks runs."})
    lm_eval_limit: int | None = field(
        default=None, metadata={"help": "Items per lm_eval_tasks task (a quick, noisier estimate)."}
    )
    lm_eval_include_path: str | None = field(
        default=None,
        metadata={"help": "A folder of extra lm-eval task YAMLs (a local task) for lm_eval_tasks."},
    )
    forget_sequence: list[str] | None = field(
        default=None,
        metadata={
            "help": "Several unlearning requests, in order (MUSE's sustainability/scalability runs): the "
            "forget split of each, in place of train_dataset's split: `split=` of a synthetic:tofu source, "
            "else train_dataset_config, or CONFIG:SPLIT for both (e.g. sust:forget_1 of muse-bench/MUSE-News). "
            "Each request trains into output_dir/request_<k>; see sequence_mode."
        },
    )
    retain_sequence: list[str] | None = field(
        default=None,
        metadata={
            "help": "The retain split of each request of forget_sequence (same forms, applied to "
            "retain_dataset; e.g. retain99 retain95 retain90). Default: retain_dataset as given, every request."
        },
    )
    sequence_mode: str = field(
        default="sustainability",
        metadata={
            "help": "sustainability (default): request k starts from request k-1's model (MUSE C6); "
            "scalability: every request starts from model_name_or_path (MUSE C5, growing forget sets)."
        },
    )
    sequence_eval: str | None = field(
        default=None,
        metadata={
            "help": "Evaluate the start model and every request's model: tofu (on each request's forget "
            "split) or muse. Writes SEQUENCE.md and sequence_metrics.png (every metric against the request)."
        },
    )
    sequence_eval_data: str | None = field(
        default=None,
        metadata={
            "help": "Benchmark data of sequence_eval (default: train_dataset's local folder, e.g. the "
            "generated TOFU benchmark; MUSE: a muse_bench-layout folder or Hub id)."
        },
    )
    sequence_eval_retain_logs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Retain-model eval logs for Forget Quality / PrivLeak: one for every request, or one "
            "per request (TOFU: the oracle of each forget split)."
        },
    )
    sequence_eval_retain_models: list[str] | None = field(
        default=None,
        metadata={
            "help": "Retain (oracle) models instead of logs: one for every request, or one per request "
            "(TOFU: the model trained without that request's forget split); scored with each evaluation."
        },
    )
    sequence_eval_max_examples: int | None = field(
        default=None, metadata={"help": "Keep the first N items of every eval set (quick runs)."}
    )
    sequence_eval_prompt_format: str | None = field(
        default=None,
        metadata={
            "help": "TOFU's --prompt-format for sequence_eval (e.g. ou_chat for open-unlearning's models)."
        },
    )


DATACLASSES_NOTE = (
    "Keys come from three dataclasses: RecipeArguments (alignkit.launch.recipe), the method's config "
    "(e.g. NPOConfig: transformers.TrainingArguments plus the method's hyperparameters) and trl.ModelConfig."
)


class _RecipeParser(TrlParser):
    """``TrlParser`` that raises ``RecipeError`` instead of exiting, and never accepts abbreviations."""

    def __init__(self, dataclass_types, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(dataclass_types, **kwargs)

    def error(self, message):  # argparse calls this for bad values; exiting is the CLI's decision
        raise RecipeError(message)


def method_dataclasses(method: str) -> tuple[type, type, type]:
    from alignkit.trainers import get_method

    return (RecipeArguments, get_method(method).config_cls, ModelConfig)


def make_parser(method: str, **kwargs) -> _RecipeParser:
    return _RecipeParser(method_dataclasses(method), **kwargs)


def _known_keys(parser) -> dict[str, Any]:
    """dest -> the action that sets it (the positive one for booleans with a `--no_` twin)."""
    keys: dict[str, Any] = {}
    for action in parser._actions:
        if action.dest == "help" or not action.option_strings:
            continue
        if action.dest not in keys or not action.option_strings[0].startswith("--no_"):
            keys[action.dest] = action
    return keys


def _option_names(parser) -> set[str]:
    """Every ``--name`` the parser accepts (with ``--no_x`` twins and dashed aliases), without dashes."""
    return {o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}


def _dest_of(parser, option: str) -> str:
    for action in parser._actions:
        if f"--{option}" in action.option_strings:
            return action.dest
    return option


def _allows_list(key: str, dataclass_types) -> bool:
    # The class annotations, not `dataclasses.fields`: HfArgumentParser narrows a field's type in place
    # (`None | str | list[str]` becomes `str`).
    for cls in dataclass_types:
        for klass in cls.__mro__:
            annotation = klass.__dict__.get("__annotations__", {}).get(key)
            if annotation is not None:
                return "list" in str(annotation).lower()
    return False


def _check_yaml_value(key: str, value, action, parser, where: str) -> Any:
    """A YAML value through the same argparse conversion and checks as ``--key value`` on the command line.

    (argparse checks only what comes from the command line: a default, which is how the recipe's
    values reach the parser, is taken as it is, so `dtype: float13` or `use_peft: 5` went through.)
    """
    if value is None:
        return value
    scalar = (str, int, float, bool)
    if isinstance(value, dict):
        if action.type in (int, float):
            raise RecipeError(
                f"{where}: `{key}` must be a single {action.type.__name__}, got a mapping {value!r}."
            )
        return value  # JSON-like fields (model_init_kwargs, deepspeed, ...): their dataclass checks them
    if isinstance(value, list):
        if action.nargs not in ("+", "*"):
            if action.type in (int, float):
                raise RecipeError(
                    f"{where}: `{key}` must be a single {action.type.__name__}, got list {value!r}."
                )
            if not _allows_list(key, parser.dataclass_types):
                raise RecipeError(f"{where}: `{key}` takes a single value, got a list {value!r}; keep one.")
            return value
        if all(isinstance(v, dict) for v in value) and _allows_list(key, parser.dataclass_types):
            return value  # a list of mappings (`constraints:`): the config's own check names a bad entry
        if not all(isinstance(v, scalar) for v in value):
            raise RecipeError(f"{where}: `{key}` must be a list of plain values, got {value!r}.")
        tokens = [_token(v) for v in value]
    elif action.type is int and isinstance(value, float):
        if not value.is_integer():
            raise RecipeError(f"{where}: `{key}` must be an integer, got {value!r}.")
        tokens = [str(int(value))]
    elif isinstance(value, scalar):
        tokens = [_token(value)]
    else:
        raise RecipeError(f"{where}: `{key}` has an unsupported value {value!r}.")
    try:
        converted = parser._get_values(action, tokens if action.nargs in ("+", "*") else tokens[:1])
    except argparse.ArgumentError as err:
        raise RecipeError(f"{where}: `{key}`: {err.message} (got {value!r})") from None
    return converted


def _token(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Recipe:
    """A parsed, validated recipe."""

    path: Path | None
    method: str
    script: RecipeArguments
    training: Any  # the method's config (an AlignKitConfig subclass)
    model: ModelConfig
    settings: dict[str, Any]  # every key the recipe or the command line set, with its parsed value
    origin: dict[str, str]  # key -> "recipe" | "cli" | "method" | "auto"
    notes: list[str] = field(default_factory=list)  # what was set automatically, and why

    @property
    def spec(self):
        from alignkit.trainers import get_method

        return get_method(self.method)

    def to_yaml(self, header: str | None = None) -> str:
        """The resolved recipe: a plain YAML that re-runs this exact configuration (secrets redacted:
        a token given on the command line or in `env:` must be given again, never read from here)."""
        from alignkit.redact import redact

        lines = [f"# {line}" if line else "#" for line in (header or "").splitlines()]
        body = yaml.safe_dump(
            redact(self.settings), sort_keys=False, default_flow_style=False, allow_unicode=True
        )
        return ("\n".join(lines) + "\n\n" if lines else "") + body


def load_recipe(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    values: dict | None = None,
    auto: bool = True,
    set_env: bool = True,
) -> Recipe:
    """Parse a recipe file (or ``values``, a dict) plus ``--key value`` overrides; validate everything.

    ``auto`` lets the machine fill in what it needs (``use_cpu: true`` without CUDA, an
    ``output_dir`` under ``runs/``); ``set_env`` exports the recipe's ``env:`` mapping.
    """
    where = str(path) if path is not None else "recipe"
    data = dict(read_recipe_file(path)) if path is not None else {}
    data.update(values or {})
    overrides = list(overrides)
    env = data.pop("env", None)
    if env is not None and not isinstance(env, dict):
        raise RecipeError(f"{where}: `env` must be a mapping of environment variables, got {env!r}.")

    method = scan_cli_value(overrides, "method") or data.get("method")
    if not method:
        raise RecipeError(
            f"{where}: no `method:` given. Add `method: NAME` to the recipe or pass --method NAME; "
            f"known methods: {_methods_help()}."
        )
    try:
        from alignkit.trainers import get_method

        spec = get_method(str(method))
    except ValueError as err:
        raise RecipeError(f"{where}: {err}") from None
    parser = make_parser(spec.name)
    known = _known_keys(parser)

    errors = [_unknown_key_message(k, known, spec.name, where) for k in data if k not in known]
    cli = cli_keys(overrides)
    options = _option_names(parser)
    errors += [
        _unknown_key_message(k, known, spec.name, "command line")
        for k in cli
        if k not in options and k != "config"
    ]
    if "config" in cli:
        errors.append(
            "command line: `--config` is not used by `alignkit train`; pass the recipe file as the argument."
        )
    if errors:
        raise RecipeError("\n".join(errors))
    cli = [_dest_of(parser, k) for k in cli]

    origin: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    for key, value in spec.overrides.items():
        defaults[key] = value
        origin[key] = "method"
    notes: list[str] = []
    if auto:
        import torch

        if "use_cpu" not in data and "use_cpu" not in cli and not torch.cuda.is_available():
            defaults["use_cpu"] = True
            origin["use_cpu"] = "auto"
            notes.append("use_cpu: true (no CUDA device; also makes multi-process launches use gloo)")
        if "output_dir" not in data and "output_dir" not in cli:
            stem = Path(path).stem if path is not None else spec.name
            defaults["output_dir"] = str(Path("runs") / stem)
            origin["output_dir"] = "auto"
            notes.append(f"output_dir: {defaults['output_dir']} (the recipe sets none)")
    for key, value in data.items():
        defaults[key] = _check_yaml_value(key, value, known[key], parser, where)
        origin[key] = "recipe"
    for key in cli:
        origin[key] = "cli"
    defaults["method"] = spec.name

    if set_env and env:
        for key, value in env.items():
            os.environ[str(key)] = str(value)
    parser.set_defaults_with_config(**defaults)
    try:
        script, training, model, rest = parser.parse_args_into_dataclasses(
            args=overrides, return_remaining_strings=True
        )
    except RecipeError as err:
        raise RecipeError(f"{where}: {err}") from None
    except (ValueError, TypeError) as err:  # a config's __post_init__ refused a value
        raise RecipeError(f"{where}: {err}") from None
    if rest:
        raise RecipeError(
            f"command line: unexpected {' '.join(rest)!r}; overrides are `--key value` pairs of recipe keys."
        )
    script.method = spec.name

    settings: dict[str, Any] = {}
    objects = (script, training, model)
    for key in ["method", *data, *[k for k in cli if k not in data]]:
        if key in settings:
            continue
        for obj in objects:
            if hasattr(obj, key) and any(f.name == key for f in dataclasses.fields(obj)):
                settings[key] = plain(getattr(obj, key))
                break
    if env:
        settings["env"] = {str(k): str(v) for k, v in env.items()}
    recipe = Recipe(
        Path(path) if path is not None else None, spec.name, script, training, model, settings, origin, notes
    )
    validate(recipe, where)
    return recipe


NO_RESUME = ("false", "no", "0", "none", "")


def resumes(value) -> bool:
    """Whether a ``resume_from_checkpoint`` value asks to resume (``true``/``last`` or a folder)."""
    return value is not None and str(value).lower() not in NO_RESUME


def validate(recipe: Recipe, where: str = "recipe") -> None:
    """Checks that span fields or need the sources parsed (nothing is loaded)."""
    s, m = recipe.script, recipe.model
    if not s.train_dataset:
        raise RecipeError(
            f"{where}: `train_dataset` is required (the forget set for unlearning methods): a Hub id, a "
            "local file or folder, or synthetic:NAME?key=value."
        )
    if not m.model_name_or_path:
        raise RecipeError(
            f"{where}: `model_name_or_path` is required: a Hub id, a local folder, or synthetic:tiny."
        )
    hub = []  # (key, Hub id) of every source that would be downloaded
    try:
        for name in ("train_dataset", "retain_dataset", "eval_dataset"):
            value = getattr(s, name)
            if value and parse_source(value).kind == "hub":
                hub.append((name, value, "dataset"))
        validation = getattr(recipe.training, "u2a_validation_dataset", None)  # U2A's pairs (GA/NPO)
        if validation and parse_source(validation).kind == "hub":
            hub.append(("u2a_validation_dataset", validation, "dataset"))
        if parse_source(m.model_name_or_path, what="model").kind == "hub":
            hub.append(("model_name_or_path", m.model_name_or_path, "model"))
        for name in ("ref_model_name_or_path", "tokenizer_name_or_path"):
            value = getattr(s, name)
            if value and value.startswith("synthetic:"):
                raise SourceError(f"{value!r}: only `model_name_or_path` may be synthetic.")
            if value and parse_source(value, what="model").kind == "hub":
                hub.append((name, value, "model"))
    except SourceError as err:
        raise RecipeError(f"{where}: {err}") from None
    if s.dataset_preset:
        from alignkit.data.presets import PresetError, parse_preset

        try:
            parse_preset(s.dataset_preset)
        except PresetError as err:
            raise RecipeError(f"{where}: `dataset_preset`: {err}") from None
    for name, value, what in hub:  # before any data is generated or model loaded: no 30-50 s of retries
        message = unreachable_hub_source(value, what)
        if message:
            raise RecipeError(f"{where}: `{name}`: {message}")
    if (m.load_in_4bit or m.load_in_8bit) and not m.use_peft:
        raise RecipeError(
            f"{where}: `load_in_4bit`/`load_in_8bit` quantize the base weights, which then cannot be trained; "
            "set `use_peft: true` (QLoRA) or drop the quantization."
        )
    if m.load_in_4bit and m.load_in_8bit:
        raise RecipeError(f"{where}: set only one of `load_in_4bit` and `load_in_8bit`.")
    if m.model_name_or_path.startswith("synthetic:") and (m.load_in_4bit or m.load_in_8bit):
        raise RecipeError(
            f"{where}: a synthetic tiny model cannot be quantized; drop `load_in_4bit`/`load_in_8bit`."
        )
    targets = m.lora_target_modules or []
    if m.use_peft and ("lm_head" in targets or "lm_head" in (m.lora_modules_to_save or [])):
        raise RecipeError(
            f"{where}: `lm_head` cannot carry a LoRA adapter here: alignkit's fused log-prob head reads "
            "`lm_head.weight` directly (trl-notes P2). Remove it from `lora_target_modules`/`lora_modules_to_save`."
        )
    if recipe.training.ref_mode == "adapter_off" and not m.use_peft:
        raise RecipeError(f"{where}: `ref_mode: adapter_off` needs `use_peft: true`.")
    if s.ref_model_name_or_path and recipe.training.ref_mode in ("adapter_off", "none"):
        raise RecipeError(
            f"{where}: `ref_model_name_or_path` is set but `ref_mode: {recipe.training.ref_mode}` never reads it."
        )
    out = recipe.training.output_dir
    if not str(out or "").strip():
        raise RecipeError(
            f"{where}: `output_dir` is empty; give the folder the run writes to (e.g. runs/my_run)."
        )
    if Path(out).exists() and not Path(out).is_dir():
        raise RecipeError(
            f"{where}: `output_dir` {out} is a file; give a folder (a new one, or an earlier run's)."
        )
    if s.overwrite_output_dir and resumes(recipe.training.resume_from_checkpoint):
        raise RecipeError(
            f"{where}: `overwrite_output_dir: true` replaces the run in {out} but `resume_from_checkpoint` "
            "continues it; drop one of the two."
        )
    if s.text_chunk_tokens is not None and s.text_chunk_tokens < 1:
        raise RecipeError(f"{where}: `text_chunk_tokens` must be >= 1, got {s.text_chunk_tokens}.")
    if s.forget_sequence is not None or s.sequence_eval is not None:
        check_sequence(recipe, where)


def check_sequence(recipe: Recipe, where: str = "recipe") -> None:
    """The keys of a sequence of requests (alignkit.launch.sequence), checked before anything loads."""
    s = recipe.script
    if s.sequence_mode not in SEQUENCE_MODES:
        raise RecipeError(
            f"{where}: `sequence_mode` must be one of {', '.join(SEQUENCE_MODES)}, got {s.sequence_mode!r}."
        )
    if s.sequence_eval is not None and s.sequence_eval not in SEQUENCE_EVALS:
        raise RecipeError(
            f"{where}: `sequence_eval` must be one of {', '.join(SEQUENCE_EVALS)}, got {s.sequence_eval!r}."
        )
    if not s.forget_sequence:
        raise RecipeError(
            f"{where}: `sequence_eval` needs `forget_sequence` (the forget split of each request), "
            "e.g. forget_sequence: [forget01, forget05, forget10]."
        )
    n = len(s.forget_sequence)
    if s.retain_sequence is not None:
        if len(s.retain_sequence) != n:
            raise RecipeError(
                f"{where}: `retain_sequence` has {len(s.retain_sequence)} entries but `forget_sequence` has {n}; "
                "give one retain split per request."
            )
        if not s.retain_dataset:
            raise RecipeError(
                f"{where}: `retain_sequence` is set but `retain_dataset` is not; name the retain source."
            )
    for key in ("sequence_eval_retain_logs", "sequence_eval_retain_models"):
        given = getattr(s, key)
        if given is not None and len(given) not in (1, n):
            raise RecipeError(
                f"{where}: `{key}` has {len(given)} entries; give 1 (every request) or {n} (one per request)."
            )
    if s.sequence_eval_retain_logs and s.sequence_eval_retain_models:
        raise RecipeError(
            f"{where}: give `sequence_eval_retain_logs` or `sequence_eval_retain_models`, not both."
        )
    if s.sequence_eval_max_examples is not None and s.sequence_eval_max_examples < 1:
        raise RecipeError(
            f"{where}: `sequence_eval_max_examples` must be >= 1, got {s.sequence_eval_max_examples}."
        )


def recipe_help(method: str) -> str:
    """Every key a recipe for ``method`` accepts, with its help text (``alignkit train --method X --help``)."""
    parser = make_parser(method, prog=f"alignkit train RECIPE.yaml --method {method}")
    return parser.format_help()
