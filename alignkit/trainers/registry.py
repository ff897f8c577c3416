"""The method registry: each method's name, family, data shape and tags are written once, here.

A trainer declares them in ``@register(...)``; the package exports (``alignkit.trainers``,
``alignkit``), the CLI's choices, recipe validation and generation, the model card's tags and the
parametrised method tests all read this table. Variants (``npo_rt``, ``dpo``, ...) are a
registered method plus config overrides (and, where the data differs, their own data shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# What a method does to a model, and so which direction the generic method test checks:
# unlearning: the forget log-prob goes down; alignment: the preferred completions gain on the
# others; sft: the answer log-prob goes up.
FAMILIES = ("unlearning", "alignment", "sft")
# The record shape a method trains on (alignkit.data.records): one completion per row (QA, text),
# chosen + one rejected, chosen + N rejected, a graded/ranked list, or negatives only.
DATA_SHAPES = ("single", "pairwise", "one_vs_n", "ranked", "negatives")

METHODS: dict[str, MethodSpec] = {}
# Other names of a registered method or variant (e.g. ``s_dpo``); resolved by :func:`get_method`,
# not listed in METHODS (so tests and recipes do not count a method twice).
ALIASES: dict[str, str] = {}


@dataclass(frozen=True)
class Variant:
    """A registered method run with other config defaults (and, optionally, another data shape)."""

    overrides: dict[str, Any]
    data: str | None = None
    summary: str | None = None
    tags: tuple[str, ...] | None = None  # replaces the method's tags when given


@dataclass(frozen=True)
class MethodSpec:
    name: str
    trainer_cls: type
    overrides: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    family: str = "unlearning"
    data: str = "single"
    tags: tuple[str, ...] = ()

    @property
    def config_cls(self) -> type:
        return self.trainer_cls.config_class

    @property
    def is_variant(self) -> bool:
        return self.name != self.trainer_cls.method_name

    @property
    def card_tags(self) -> list[str]:
        """Hub tags for a model trained with this method: its family (not ``sft``) and its own tags."""
        return [*([self.family] if self.family != "sft" else []), *self.tags]

    def make_config(self, **kwargs):
        return self.config_cls(**{**self.overrides, **kwargs})


def register(
    name: str,
    *,
    family: str,
    data: str,
    tags: tuple[str, ...] | list[str] = (),
    summary: str = "",
    variants: dict[str, dict[str, Any] | Variant] | None = None,
    aliases: tuple[str, ...] = (),
):
    """Class decorator: register a trainer under ``name`` (and each variant).

    ``family``: one of :data:`FAMILIES`; ``data``: one of :data:`DATA_SHAPES`; ``tags``: extra Hub
    tags (e.g. the paper's short name). ``variants``: ``{name: overrides}`` or ``{name: Variant(...)}``.
    ``aliases``: other names that resolve to ``name``.
    """
    if family not in FAMILIES:
        raise ValueError(f"register({name!r}): `family` must be one of {FAMILIES}, got {family!r}.")
    for shape in [data, *(v.data for v in (variants or {}).values() if isinstance(v, Variant) and v.data)]:
        if shape not in DATA_SHAPES:
            raise ValueError(f"register({name!r}): `data` must be one of {DATA_SHAPES}, got {shape!r}.")

    def wrap(cls):
        cls.method_name = name
        METHODS[name] = MethodSpec(name, cls, {}, summary, family, data, tuple(tags))
        for variant_name, variant in (variants or {}).items():
            if not isinstance(variant, Variant):
                variant = Variant(variant)
            METHODS[variant_name] = MethodSpec(
                variant_name,
                cls,
                variant.overrides,
                variant.summary or f"{summary} ({variant.overrides})",
                family,
                variant.data or data,
                tuple(tags if variant.tags is None else variant.tags),
            )
        ALIASES.update(dict.fromkeys(aliases, name))
        return cls

    return wrap


def get_method(name: str) -> MethodSpec:
    # Every method is registered by then: importing this module runs ``alignkit/trainers/__init__``
    # first, which imports each trainer file.
    name = ALIASES.get(name, name)
    if name not in METHODS:
        import difflib

        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown method {name!r}.{hint} Known: {', '.join(sorted(METHODS))}.")
    return METHODS[name]
