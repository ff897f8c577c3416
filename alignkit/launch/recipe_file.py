"""Reading a recipe file and naming its mistakes: what ``alignkit train`` needs before it imports the
trainer stack (only PyYAML here), shared by the full parse in :mod:`alignkit.launch.recipe` and the
fast pre-check in :mod:`alignkit.launch.recipe_keys`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from alignkit.errors import UserError


class RecipeError(UserError):
    """A recipe that cannot run; the message names the file, the key and the fix."""


def other_methods_with(key: str, method: str, fields_by_method: Mapping[str, Iterable[str]]) -> list[str]:
    """The methods (other than ``method``) whose config has a field ``key``."""
    return sorted(name for name, names in fields_by_method.items() if name != method and key in set(names))


def unknown_key_message(
    key: str, known: Iterable[str], method: str, where: str, fields_by_method: Mapping[str, Iterable[str]]
) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    msg = f"{where}: unknown key `{key}`."
    others = other_methods_with(key, method, fields_by_method)
    if others:
        msg += f" It is a field of {', '.join(others)}, not of method {method!r}."
    elif close:
        msg += f" Did you mean `{close[0]}`?"
    return msg


def cli_keys(tokens: list[str]) -> list[str]:
    return [t[2:].split("=", 1)[0] for t in tokens if t.startswith("--")]


def scan_cli_value(tokens: list[str], key: str) -> str | None:
    """The value of ``--key v`` / ``--key=v`` on the command line, if given (the last one wins)."""
    value = None
    for i, tok in enumerate(tokens):
        if tok == f"--{key}" and i + 1 < len(tokens):
            value = tokens[i + 1]
        elif tok.startswith(f"--{key}="):
            value = tok.split("=", 1)[1]
    return value


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader for which a key given twice is an error (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(
                    f"line {key_node.start_mark.line + 1}: key `{key}` appears twice (lines "
                    f"{seen[key] + 1} and {key_node.start_mark.line + 1}); keep one"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_recipe_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe {path} does not exist.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise RecipeError(
            f"{path}, line {line}: byte 0x{raw[err.start]:02x} is not valid UTF-8; re-save the recipe as UTF-8."
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as err:
        raise RecipeError(f"{path}, {err}.") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path} must hold a YAML mapping of key: value, got {type(data).__name__}.")
    return data
