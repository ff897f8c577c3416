"""What ``alignkit train`` knows about recipe keys before it imports the trainer stack.

Every method's keys come from dataclasses that import torch and transformers (5-11 s idle, up to
25 s under load, 52 s for a first call that had to build a store), so ``alignkit train --help``,
``train --method npo --help`` and a misspelled or unusable key used to cost that much. The keys ship
with alignkit instead, as a generated file next to this module (``recipe_keys.json``): every method's
name, the options of each config's parser (names, help, defaults: enough to print ``--help`` word
for word and to check a value) and every method's fields.

The file is written by ``python -m alignkit.launch.recipe_keys`` (``--check`` exits 1 while it is
stale; a default-suite test runs the check). It records a fingerprint of the files that define the
keys (each method's config and trainer classes, the registry, the recipe dataclasses, the value
checks) and the transformers/TRL minor versions it was built with. When they differ here (an edited
checkout that was not regenerated, other library versions) or the file is missing, nothing is
answered from it: everything takes the full path, which is slower but never wrong.

The pre-check (:func:`precheck`) names unknown keys, values no run can use
(:func:`alignkit.values.check_values`) and Hub ids while the Hub cannot be reached, with the same
messages as the full parse, which still runs before any training; it never accepts what the full
parse would refuse, it only answers earlier.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from alignkit.launch.recipe_file import (
    RecipeError,
    cli_keys,
    read_recipe_file,
    scan_cli_value,
    unknown_key_message,
)
from alignkit.models.source import unreachable_hub_source
from alignkit.values import check_values

FORMAT = 2
SHIPPED = Path(__file__).with_name("recipe_keys.json")
_PACKAGE = Path(__file__).resolve().parents[1]
_HELP_FORMATTER = argparse.ArgumentDefaultsHelpFormatter  # TrlParser's (HfArgumentParser's)
# The recipe keys that name a source, and what the source is (the Hub probe's wording and switch).
SOURCE_KEYS = {
    "train_dataset": "dataset",
    "retain_dataset": "dataset",
    "eval_dataset": "dataset",
    "model_name_or_path": "model",
    "ref_model_name_or_path": "model",
    "tokenizer_name_or_path": "model",
}


def _minor(dist: str) -> str:
    """``major.minor`` of an installed distribution, read off its ``.dist-info`` folder name
    (``importlib.metadata`` costs 0.15-0.3 s of imports and parsing here, longer than the rest)."""
    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(f"{dist}-") and name.endswith(".dist-info"):
                return ".".join(name[len(dist) + 1 : -len(".dist-info")].split(".")[:2])
    return "none"


def fingerprint(sources: list[str]) -> str:
    """The contents of ``sources`` (paths inside the package) and the transformers/TRL minor versions."""
    digest = hashlib.sha256(f"{FORMAT}:transformers={_minor('transformers')}:trl={_minor('trl')}\n".encode())
    for name in sources:
        try:
            digest.update(name.encode() + b"\0" + (_PACKAGE / name).read_bytes() + b"\0")
        except OSError:
            digest.update(f"{name}: missing\0".encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def load_schema() -> dict | None:
    """The shipped keys, when they were built from these sources and library versions; else None."""
    try:
        schema = json.loads(SHIPPED.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if schema.get("format") != FORMAT or schema.get("fingerprint") != fingerprint(schema["sources"]):
        return None
    return schema


# ---------------------------------------------------------------------------------------- building
def _kind(action) -> str | None:
    if action.type in (int, float):
        return action.type.__name__
    return None  # strings, booleans and JSON-like values: checked by the full parse only


def _shown(value: Any) -> Any:
    """What the help formatter prints for ``value`` (``%(default)s``): a class or function by name."""
    if value is argparse.SUPPRESS or value is None:
        return value
    return value.__name__ if hasattr(value, "__name__") else str(value)


def _action(action, plain) -> dict:
    metavar = action.metavar
    return {
        "options": list(action.option_strings),
        "dest": action.dest,
        "nargs": action.nargs,
        "metavar": list(metavar) if isinstance(metavar, tuple) else metavar,
        "choices": None if action.choices is None else [str(c) for c in action.choices],
        "required": action.required,
        "help": action.help,
        "type": _kind(action),
        "default": plain(action.default),  # what the values pre-check starts from
        "shown": _shown(action.default),  # what --help prints
    }


def _source_file(obj) -> str | None:
    module = sys.modules.get(getattr(obj, "__module__", ""))
    path = Path(getattr(module, "__file__", "") or "").resolve()
    return str(path.relative_to(_PACKAGE)) if path.is_relative_to(_PACKAGE) else None


def build_schema() -> dict:
    """Read every method's keys off its parser (imports the trainer stack)."""
    from alignkit.launch import recipe
    from alignkit.trainers import METHODS, registry
    from alignkit.trainers.run_info import plain
    from alignkit.values import field_specs

    actions: list[dict] = []
    index: dict[str, int] = {}  # the same option (TrainingArguments', ModelConfig's) is stored once
    configs: dict[str, dict] = {}
    methods: dict[str, dict] = {}
    sources = {_source_file(m) for m in (recipe.RecipeArguments, registry.register, field_specs)}
    sources.add(str(Path(sys.modules["alignkit.trainers"].__file__).relative_to(_PACKAGE)))
    for name, spec in sorted(METHODS.items()):
        cls = spec.config_cls
        sources |= {_source_file(klass) for klass in (*cls.__mro__, spec.trainer_cls)}
        config = f"{cls.__module__}.{cls.__qualname__}"
        if config not in configs:
            refs = []
            for action in recipe.make_parser(name)._actions:
                if action.dest == "help":
                    continue  # every argparse parser adds its own -h
                entry = _action(action, plain)
                text = json.dumps(entry, sort_keys=True)
                refs.append(index.setdefault(text, len(index)))
                if refs[-1] == len(actions):
                    actions.append(entry)
            specs = {k: [plain(d), nullable] for k, (d, nullable) in field_specs(cls).items()}
            configs[config] = {"actions": refs, "specs": specs}
        methods[name] = {"config": config, "overrides": plain(dict(spec.overrides))}
    sources = sorted(s for s in sources if s is not None)
    return {
        "format": FORMAT,
        "generated_by": "python -m alignkit.launch.recipe_keys",
        "fingerprint": fingerprint(sources),
        "sources": sources,
        "methods": methods,
        "aliases": dict(registry.ALIASES),
        "fields": recipe.fields_by_method(),
        "configs": configs,
        "actions": actions,
    }


def render(schema: dict) -> str:
    return json.dumps(schema, indent=0, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------- reading
def method_names() -> list[str] | None:
    schema = load_schema()
    return sorted(schema["methods"]) if schema else None


def _resolve(schema: dict, method: str) -> str | None:
    name = schema["aliases"].get(method, method)
    return name if name in schema["methods"] else None


def _config(schema: dict, name: str) -> tuple[dict, list[dict]]:
    config = schema["configs"][schema["methods"][name]["config"]]
    return config, [schema["actions"][i] for i in config["actions"]]


def _suppressed(value: Any) -> Any:
    return argparse.SUPPRESS if value == argparse.SUPPRESS else value


def method_help(method: str) -> str | None:
    """``alignkit train --method NAME --help``, formatted from the shipped keys; None without them.

    The parser is rebuilt from the stored options, so argparse formats it for this terminal exactly
    as it formats the full parser (a test compares the two)."""
    schema = load_schema()
    name = _resolve(schema, method) if schema else None
    if name is None:
        return None
    parser = argparse.ArgumentParser(
        prog=f"alignkit train RECIPE.yaml --method {method}", formatter_class=_HELP_FORMATTER
    )
    for a in _config(schema, name)[1]:
        metavar = a["metavar"]
        parser._add_action(  # help only: nothing is parsed with these actions
            argparse.Action(
                a["options"],
                a["dest"],
                nargs=a["nargs"],
                default=_suppressed(a["shown"]),
                choices=a["choices"],
                required=a["required"],
                help=_suppressed(a["help"]),
                metavar=tuple(metavar) if isinstance(metavar, list) else metavar,
            )
        )
    return parser.format_help()


def _keys(actions: list[dict]) -> dict[str, dict]:
    """dest -> the option that sets it (the positive one for booleans with a `--no_` twin)."""
    keys: dict[str, dict] = {}
    for a in actions:
        if a["options"] and (a["dest"] not in keys or not a["options"][0].startswith("--no_")):
            keys[a["dest"]] = a
    return keys


def _number(kind: str | None, value: Any) -> Any:
    """``value`` as the key's number type; ``...`` when it is not one (left to the full parse)."""
    if value is None or kind is None:
        return value if value is None else ...
    if isinstance(value, bool):
        return ...
    try:
        return int(value) if kind == "int" else float(value)
    except (TypeError, ValueError):
        return ...


def check_hub_sources(data: dict, overrides: list[str], where: str) -> None:
    """A Hub id while the Hub cannot be reached (and HF_HUB_OFFLINE is not set): one line, before torch."""
    for key, what in SOURCE_KEYS.items():
        value = scan_cli_value(overrides, key) or data.get(key)
        message = unreachable_hub_source(value, what) if isinstance(value, str) else None
        if message:
            raise RecipeError(f"{where}: `{key}`: {message}")


def precheck(path: str | Path | None, overrides: list[str]) -> None:
    """Raise ``RecipeError`` for unknown keys, unusable values and an unreachable Hub (no torch).

    The key and value checks need the shipped keys; the full parse answers when they do not apply
    here, or when the recipe needs what only the full parse knows (an unknown method, a value that
    is not a plain number).
    """
    where = str(path) if path is not None else "recipe"
    data = dict(read_recipe_file(path)) if path is not None else {}
    data.pop("env", None)
    _check_keys(data, overrides, where)
    check_hub_sources(data, overrides, where)


def _check_keys(data: dict, overrides: list[str], where: str) -> None:
    schema = load_schema()
    method = scan_cli_value(overrides, "method") or data.get("method")
    name = _resolve(schema, str(method)) if schema and method else None
    if name is None:
        return
    config, actions = _config(schema, name)
    keys = _keys(actions)
    options = {o[2:] for a in actions for o in a["options"] if o.startswith("--")}
    errors = [unknown_key_message(k, keys, name, where, schema["fields"]) for k in data if k not in keys]
    errors += [
        unknown_key_message(k, keys, name, "command line", schema["fields"])
        for k in cli_keys(overrides)
        if k not in options and k != "config"
    ]
    if errors:
        raise RecipeError("\n".join(errors))
    values = {k: k_["default"] for k, k_ in keys.items() if k in config["specs"]}
    values.update(schema["methods"][name]["overrides"])
    values.update({k: v for k, v in data.items() if k in values})
    for key in values:
        for option in keys[key]["options"]:
            given = scan_cli_value(overrides, option[2:])
            if given is not None:
                values[key] = given
    checked = {}
    for key, value in values.items():
        number = _number(keys[key]["type"], value)
        if number is not ...:
            checked[key] = number
    try:
        check_values(checked, {k: (d, nullable) for k, (d, nullable) in config["specs"].items()})
    except ValueError as err:
        raise RecipeError(f"{where}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alignkit.launch.recipe_keys", description="Write (or check) " + SHIPPED.name + "."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the shipped file is stale")
    args = parser.parse_args(argv)
    text = render(build_schema())
    current = SHIPPED.read_text(encoding="utf-8") if SHIPPED.is_file() else None
    if args.check:
        if current != text:
            print(f"{SHIPPED} is stale: run `python -m alignkit.launch.recipe_keys`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        SHIPPED.write_text(text, encoding="utf-8")
    print(f"{SHIPPED}: {len(text) // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
