"""Package attributes imported on first use (PEP 562), so that importing a package costs nothing.

``alignkit.launch`` and ``alignkit.models`` export names whose modules import torch/transformers,
while the CLI's help and flag checks read light siblings of the same packages and must not pay for
those imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each name to its submodule."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
