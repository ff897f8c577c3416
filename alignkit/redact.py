"""Keep secrets out of every file alignkit writes or uploads (recipe, run_info, card, logs).

A value is secret when its key looks like a credential (``hub_token``, ``HF_TOKEN``,
``WANDB_API_KEY``, ``*_secret``, ``*_password``...) or when the value itself looks like an access
token (``hf_...``, ``sk-...``, ``ghp_...``). Such values are replaced by ``REDACTED``; text is also
scrubbed of every secret value currently in the environment, wherever it appears.
"""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "<redacted>"

# Key names: a credential word at the end (HF_TOKEN, hub_token, wandb_api_key, db_password) ...
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(token|access_token|auth_token|api_key|apikey|secret|secret_key|password|passwd|"
    r"credentials?|private_key)$",
    re.IGNORECASE,
)
# ... except a tokenizer's special tokens and token counts, which are not credentials.
_NOT_SECRET_KEY = re.compile(
    r"^(pad|eos|bos|unk|sep|cls|mask|additional_special|chat|start|end|image|audio|video)_token$",
    re.IGNORECASE,
)
# Values shaped like access tokens of the services a training run talks to.
_SECRET_VALUE = re.compile(
    r"\b(hf_[A-Za-z0-9]{20,}|api_org_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|xox[abpr]-[A-Za-z0-9\-]{10,})\b"
)


def is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key)) and not _NOT_SECRET_KEY.match(key)


def environment_secrets() -> list[str]:
    """Values of secret-looking environment variables (long enough not to match by accident)."""
    return sorted(
        {v for k, v in os.environ.items() if is_secret_key(k) and len(v) >= 8}, key=len, reverse=True
    )


def redact_text(text: str, extra: list[str] | tuple[str, ...] = ()) -> str:
    for secret in [*extra, *environment_secrets()]:
        if secret and len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    return _SECRET_VALUE.sub(REDACTED, text)


def redact(value: Any, extra: list[str] | tuple[str, ...] = ()) -> Any:
    """A copy of ``value`` (mappings, lists, strings) with every secret replaced by ``REDACTED``."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_key(k) and v not in (None, "") else redact(v, extra))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v, extra) for v in value)
    if isinstance(value, str):
        return redact_text(value, extra)
    return value


def secret_values(value: Any) -> list[str]:
    """Every secret value held under a secret-looking key in ``value`` (to scrub from free text)."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if is_secret_key(k) and isinstance(v, str) and v:
                found.append(v)
            else:
                found += secret_values(v)
    elif isinstance(value, list | tuple):
        for v in value:
            found += secret_values(v)
    return found


_YAML_KEY_LINE = re.compile(r"^(\s*-?\s*)([\w\-.]+)(\s*:\s*)(\S.*)$")


def redact_yaml_text(text: str) -> str:
    """YAML text (comments kept) with the value of every secret-looking ``key: value`` line replaced."""
    out = []
    for line in text.splitlines(keepends=True):
        match = _YAML_KEY_LINE.match(line.rstrip("\n"))
        if match and is_secret_key(match[2]) and match[4] not in ("null", "~", "''", '""'):
            line = f"{match[1]}{match[2]}{match[3]}{REDACTED}" + ("\n" if line.endswith("\n") else "")
        out.append(line)
    return redact_text("".join(out))


def redact_folder(folder) -> None:
    """Redact every text file under ``folder`` in place (the last step before an upload)."""
    import json
    from pathlib import Path

    for path in Path(folder).rglob("*"):
        if not path.is_file() or path.suffix not in (".json", ".yaml", ".yml", ".md", ".txt", ".jinja"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if path.suffix == ".json":
            try:
                new = json.dumps(redact(json.loads(text)), indent=2, ensure_ascii=False) + "\n"
            except ValueError:
                new = redact_text(text)
        elif path.suffix in (".yaml", ".yml"):
            new = redact_yaml_text(text)
        else:
            new = redact_text(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
