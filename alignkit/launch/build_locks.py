"""A lock left by an interrupted build of a torch C++ extension, which would stop a DeepSpeed run without a word.

DeepSpeed builds some of its ops on first use through ``torch.utils.cpp_extension`` (on CPU, the
shared-memory op its communication backend loads while the model is created), under the extensions
root (``TORCH_EXTENSIONS_DIR``, else torch's cache folder). Each build holds ``<op>/lock`` and removes
it when done. A build killed midway leaves the file, and torch then waits for it to go, forever and
silently (``FileBaton.wait`` has no timeout and torch passes it no warning): the run prints nothing.
torch offers no stale-lock check, hence this one, before the model is loaded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# A build of one op takes about a minute here; a lock this old is not a build still running.
STALE_AFTER_S = 600


def extensions_root() -> Path:
    """Where torch builds C++ extensions (its own rule: ``TORCH_EXTENSIONS_DIR``, else its cache folder)."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def stale_build_locks(root: Path | None = None, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Build locks under ``root`` (one or two folders down: ``<op>/lock`` or ``py311_cpu/<op>/lock``)
    last touched more than ``older_than_s`` seconds ago."""
    root = extensions_root() if root is None else root
    if not root.is_dir():
        return []
    now = time.time()
    locks = [*root.glob("*/lock"), *root.glob("*/*/lock")]
    return sorted(p for p in locks if now - p.stat().st_mtime > older_than_s)


def age(path: Path) -> str:
    hours = (time.time() - path.stat().st_mtime) / 3600
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
