"""Check a model or tokenizer source before ``from_pretrained`` so that a mistake is one clear line.

``from_pretrained`` on a folder without ``config.json`` complains about sentencepiece or a repo-id
format, and an uncached Hub id under ``HF_HUB_OFFLINE=1`` fails deep in huggingface_hub. These
checks say what is wrong with the path and how to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path

from alignkit.errors import UserError

TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def check_pretrained_source(name: str, *, what: str = "model", flag: str = "model_name_or_path") -> None:
    """Raise ``UserError`` naming ``flag`` if ``name`` cannot be a saved model (or tokenizer)."""
    path = Path(name).expanduser()
    needs = ("config.json",) if what == "model" else TOKENIZER_FILES
    if path.is_dir():
        if not any((path / f).is_file() for f in needs):
            raise UserError(
                f"`{flag}`: the folder {name} has no {' or '.join(needs)}, so it is not a saved {what}; "
                "point it at a folder written by save_pretrained (e.g. a run's output_dir) or a Hub id."
            )
        return
    if path.exists():
        raise UserError(f"`{flag}`: {name} is a file; give the {what}'s folder or a Hub id.")
    if _looks_local(name):
        raise UserError(f"`{flag}`: the folder {name} does not exist; check the path (or give a Hub id).")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        cached = any(isinstance(try_to_load_from_cache(name, f), str) for f in needs)
        if not cached:
            raise UserError(
                f"`{flag}`: {name!r} is neither a local folder nor in the Hugging Face cache, and "
                "HF_HUB_OFFLINE=1 forbids downloading it; download it first (`hf download "
                f"{name}`) or give a local folder."
            )
