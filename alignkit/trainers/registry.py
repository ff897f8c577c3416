"""The method registry: each method's name is written once, here, by ``@register``.

The CLI's choices, recipe validation and the parametrised method tests all read this table.
Variants (``npo_rt``, ``ga_kl``, ...) are a registered method plus config overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS: dict[str, MethodSpec] = {}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    trainer_cls: type
    overrides: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    @property
    def config_cls(self) -> type:
        return self.trainer_cls.config_class

    def make_config(self, **kwargs):
        return self.config_cls(**{**self.overrides, **kwargs})


def register(name: str, *, summary: str = "", variants: dict[str, dict[str, Any]] | None = None):
    """Class decorator: register a trainer under ``name`` (and each ``variant: overrides``)."""

    def wrap(cls):
        cls.method_name = name
        METHODS[name] = MethodSpec(name, cls, {}, summary)
        for variant, overrides in (variants or {}).items():
            METHODS[variant] = MethodSpec(variant, cls, overrides, f"{summary} ({overrides})")
        return cls

    return wrap


def get_method(name: str) -> MethodSpec:
    # Every method is registered by then: importing this module runs ``alignkit/trainers/__init__``
    # first, which imports each trainer file.
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown method {name!r}.{hint} Known: {', '.join(sorted(METHODS))}.")
    return METHODS[name]
