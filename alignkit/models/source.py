"""Check a model or tokenizer source before ``from_pretrained`` so that a mistake is one clear line.

``from_pretrained`` on a folder without ``config.json`` complains about sentencepiece or a repo-id
format, and an uncached Hub id under ``HF_HUB_OFFLINE=1`` fails deep in huggingface_hub. These
checks say what is wrong with the path and how to fix it.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from alignkit.errors import UserError

TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")
# What from_pretrained can load weights from (a PEFT adapter folder has adapter_config.json instead).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_config.json",
)
HUB_PROBE_SECONDS = 1.0


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (a TCP connect to its endpoint), or None when it can.

    Without network and without ``HF_HUB_OFFLINE``, huggingface_hub retries for 30-50 s before its
    ``OSError``; this probe answers within ``HUB_PROBE_SECONDS``, once per process. The connect runs
    in a thread so that the wait is bounded even when the name lookup hangs (a socket timeout does not
    cover DNS). A TCP handshake with the Hub's CDN takes well under a second on any working link.
    """
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = (
        endpoint.hostname or "huggingface.co",
        endpoint.port or (80 if endpoint.scheme == "http" else 443),
    )
    answer: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS):
                answer.append(None)
        except OSError as err:
            answer.append(f"{host}:{port} cannot be reached ({err.strerror or type(err).__name__})")

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(HUB_PROBE_SECONDS)
    return answer[0] if answer else f"{host}:{port} did not answer within {HUB_PROBE_SECONDS:g} s"


def is_hub_id(text: str) -> bool:
    """Whether a source string names a Hub repository: not ``synthetic:``, not an existing path, not
    path-shaped and not a JSON file name (a path that does not exist yet; loading says so)."""
    if text.startswith("synthetic:") or Path(text).expanduser().exists():
        return False
    return not (text.startswith(("/", "./", "../", "~")) or text.endswith((".json", ".jsonl")))


def unreachable_hub_source(value: str, what: str) -> str | None:
    """The one line for ``value`` when it is a Hub id, its offline switch is off and the Hub cannot be
    reached (``what``: ``model`` or ``dataset``); None otherwise."""
    switch = offline() or (what == "dataset" and os.environ.get("HF_DATASETS_OFFLINE") == "1")
    if switch or not value.strip() or not is_hub_id(value) or not hub_unreachable():
        return None
    return offline_hint(what, value)


def offline_hint(what: str, name: str) -> str:
    """The one line for a Hub id while the Hub cannot be reached (and HF_HUB_OFFLINE is not set)."""
    return (
        f"{name!r} is not a local path and the Hugging Face Hub {hub_unreachable()}. Connect, or "
        f"give a local folder, or set HF_HUB_OFFLINE=1 (and HF_DATASETS_OFFLINE=1) to use a {what} already "
        "in the Hugging Face cache."
    )


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
        if what == "model" and not any((path / f).is_file() for f in WEIGHT_FILES):
            raise UserError(
                f"`{flag}`: the folder {name} has a config but no weights (none of {', '.join(WEIGHT_FILES[:3])}); "
                "copy the weights in, or point at the complete folder save_pretrained wrote."
            )
        return
    if path.exists():
        raise UserError(f"`{flag}`: {name} is a file; give the {what}'s folder or a Hub id.")
    if _looks_local(name):
        raise UserError(f"`{flag}`: the folder {name} does not exist; check the path (or give a Hub id).")
    if not offline() and hub_unreachable():
        raise UserError(f"`{flag}`: {offline_hint(what, name)}")
    if offline():
        from huggingface_hub import try_to_load_from_cache

        cached = any(isinstance(try_to_load_from_cache(name, f), str) for f in needs)
        if not cached:
            raise UserError(
                f"`{flag}`: {name!r} is neither a local folder nor in the Hugging Face cache, and "
                "HF_HUB_OFFLINE=1 forbids downloading it; download it first (`hf download "
                f"{name}`) or give a local folder."
            )
