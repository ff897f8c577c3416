"""Where alignkit keeps what it may reuse across runs: one root, ``$ALIGNKIT_CACHE`` or
``~/.cache/alignkit`` (reference log-probs, drawn samples, generated synthetic data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit"))
