"""What ``alignkit train`` knows about recipe keys before it imports the trainer stack.

Every method's keys come from dataclasses that import torch and transformers (5-11 s idle, up to
25 s under load), so ``alignkit train --help``, ``train --method npo --help`` and a misspelled or
unusable key used to cost that much. The first run that imports them stores what the fast path
needs, as JSON in ``$ALIGNKIT_CACHE/recipe_keys/``: every method's name, each config's keys (option
names, type, default) and, once asked for, each method's ``--help`` text. The file is keyed by a
fingerprint of alignkit's own source files (names, sizes, mtimes) and the installed transformers and
TRL versions, so an edit or an upgrade builds it anew. Without it everything takes the full path.

The pre-check (:func:`precheck`) names unknown keys and values no run can use
(:func:`alignkit.values.check_values`) with the same messages as the full parse, which still runs
before any training; it never accepts what the full parse would refuse, it only answers earlier.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from alignkit.launch.recipe_file import (
    RecipeError,
    cli_keys,
    read_recipe_file,
    scan_cli_value,
    unknown_key_message,
)
from alignkit.paths import cache_root
from alignkit.values import check_values

FORMAT = 1
_PACKAGE = Path(__file__).resolve().parents[1]


def fingerprint() -> str:
    """alignkit's source files (name, size, mtime) and the transformers/TRL versions, hashed."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(f"{FORMAT}:{_PACKAGE}\n".encode())
    for path in sorted(_PACKAGE.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(_PACKAGE)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    for dist in ("transformers", "trl"):
        try:
            digest.update(f"{dist}={version(dist)}\n".encode())
        except PackageNotFoundError:
            digest.update(f"{dist}=none\n".encode())
    return digest.hexdigest()[:16]


def _folder() -> Path:
    return cache_root() / "recipe_keys"


def _write(path: Path, text: str) -> None:
    """Atomically (every rank of a launch may write the same file at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def load_schema() -> dict | None:
    """The stored keys for this checkout and these library versions, or None."""
    try:
        return json.loads((_folder() / f"{fingerprint()}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _kind(action) -> str | None:
    if action.type in (int, float):
        return action.type.__name__
    return None  # strings, booleans and JSON-like values: checked by the full parse only


def build_schema() -> dict:
    """Read every method's keys off its parser (imports the trainer stack)."""
    from alignkit.launch.recipe import _known_keys, fields_by_method, make_parser
    from alignkit.trainers import METHODS
    from alignkit.trainers.registry import ALIASES
    from alignkit.trainers.run_info import plain
    from alignkit.values import field_specs

    configs: dict[str, dict] = {}
    methods: dict[str, dict] = {}
    for name, spec in sorted(METHODS.items()):
        cls = spec.config_cls
        config = f"{cls.__module__}.{cls.__qualname__}"
        if config not in configs:
            parser = make_parser(name)
            keys = {
                dest: {
                    "options": list(action.option_strings),
                    "type": _kind(action),
                    "default": plain(action.default),
                }
                for dest, action in _known_keys(parser).items()
            }
            specs = {k: [plain(d), nullable] for k, (d, nullable) in field_specs(cls).items()}
            configs[config] = {"keys": keys, "specs": specs}
        methods[name] = {"config": config, "overrides": plain(dict(spec.overrides))}
    return {
        "format": FORMAT,
        "methods": methods,
        "configs": configs,
        "aliases": dict(ALIASES),
        "fields": fields_by_method(),
    }


def ensure_schema() -> None:
    """Store the keys if this checkout has none stored yet (call it once the trainer stack is imported)."""
    path = _folder() / f"{fingerprint()}.json"
    if not path.is_file():
        with contextlib.suppress(OSError):  # a read-only cache: the fast path is an optimisation only
            _write(path, json.dumps(build_schema()))
            week = time.time() - 7 * 24 * 3600
            for old in _folder().iterdir():  # keys of edited sources or other installs, unused for a week
                if old.stat().st_mtime < week:
                    old.unlink()


def method_names() -> list[str] | None:
    schema = load_schema()
    return sorted(schema["methods"]) if schema else None


def _resolve(schema: dict, method: str) -> str | None:
    name = schema["aliases"].get(method, method)
    return name if name in schema["methods"] else None


def cached_help(method: str) -> str | None:
    """``alignkit train --method NAME --help`` as stored by an earlier call, or None."""
    schema = load_schema()
    name = _resolve(schema, method) if schema else None
    if name is None:
        return None
    try:
        return (_folder() / f"{fingerprint()}-help-{name}.txt").read_text(encoding="utf-8")
    except OSError:
        return None


def store_help(method: str, text: str) -> None:
    schema = load_schema()
    name = _resolve(schema, method) if schema else None
    if name is not None:
        with contextlib.suppress(OSError):
            _write(_folder() / f"{fingerprint()}-help-{name}.txt", text)


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


def precheck(path: str | Path | None, overrides: list[str]) -> None:
    """Raise ``RecipeError`` for unknown keys and unusable values, from the stored keys (no torch).

    Returns silently when nothing is stored, or when the recipe needs what only the full parse
    knows (an unknown method, a value that is not a plain number): the full parse then answers.
    """
    schema = load_schema()
    if schema is None:
        return
    where = str(path) if path is not None else "recipe"
    data = dict(read_recipe_file(path)) if path is not None else {}
    data.pop("env", None)
    method = scan_cli_value(overrides, "method") or data.get("method")
    name = _resolve(schema, str(method)) if method else None
    if name is None:
        return
    config = schema["configs"][schema["methods"][name]["config"]]
    keys = config["keys"]
    options = {o[2:] for k in keys.values() for o in k["options"] if o.startswith("--")}
    cli = cli_keys(overrides)
    errors = [unknown_key_message(k, keys, name, where, schema["fields"]) for k in data if k not in keys]
    errors += [
        unknown_key_message(k, keys, name, "command line", schema["fields"])
        for k in cli
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
    specs = {k: (d, nullable) for k, (d, nullable) in config["specs"].items()}
    try:
        check_values(checked, specs)
    except ValueError as err:
        raise RecipeError(f"{where}: {err}") from None
