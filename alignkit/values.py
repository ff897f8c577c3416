"""Checks of training-argument values that need no library, so that ``alignkit train`` can run them
before importing the trainer stack; the config classes (``AlignKitConfig.__post_init__``) run the same.

What they refuse: ``null`` for a number that cannot be unset (``learning_rate: null``), NaN/inf
(``--gamma nan``: the run would diverge and the stop message would blame the learning rate), a
batch size or accumulation of 0 (a division by zero later), an epoch count that trains nothing or
is ignored (``num_train_epochs: 0`` without ``max_steps``: 0 steps and the untrained model saved as
a success; a negative count next to ``max_steps``), and a β that saturates every loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

# Above this β·log-ratio saturates the loss from the first step (|log-ratio| >= 0.01 makes the
# argument of the sigmoid >= 10): nothing trains, and float32 overflows well before 1e30.
MAX_BETA = 1000.0
POSITIVE_INTS = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")


def field_specs(cls) -> dict[str, tuple[Any, bool]]:
    """``{field: (default, may_be_null)}`` of a dataclass: what :func:`check_values` needs to know."""
    specs = {}
    for f in dataclasses.fields(cls):
        if f.init:
            default = None if f.default is dataclasses.MISSING else f.default
            written = _annotation(cls, f.name)
            specs[f.name] = (default, "None" in str(written) or "Optional" in str(written))
    return specs


def _annotation(cls, name: str):
    """A field's annotation as the class wrote it. Not ``Field.type``: transformers' HfArgumentParser
    rewrites that in place (``int | None`` becomes ``int``) once a parser is built for the class."""
    for klass in cls.__mro__:
        annotations = vars(klass).get("__annotations__", {})
        if name in annotations:
            return annotations[name]
    return None


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def check_values(values: Mapping[str, Any], specs: Mapping[str, tuple[Any, bool]]) -> None:
    """Raise ``ValueError`` naming the first field whose value no run can use (see the module doc)."""
    for name, value in values.items():
        default, nullable = specs.get(name, (None, True))
        if value is None:
            if _number(default) and not nullable:
                raise ValueError(
                    f"`{name}` must be set (got null); drop the key to use its default {default!r}."
                )
        elif not _finite(value) and not (isinstance(default, float) and math.isinf(default)):
            raise ValueError(f"`{name}` must be a finite number, got {value}.")
    for name in POSITIVE_INTS:
        value = values.get(name)
        if _number(value) and value < 1:
            raise ValueError(f"`{name}` must be at least 1, got {value}.")
    beta = values.get("beta")
    if _number(beta) and not beta > 0:
        raise ValueError(f"`beta` must be > 0, got {beta}.")
    if _number(beta) and beta > MAX_BETA:
        raise ValueError(
            f"`beta` must be in (0, {MAX_BETA:g}], got {beta}: β scales log-ratios inside a sigmoid/"
            "softmax, so a value this large saturates the loss and trains nothing (papers use 0.01-10)."
        )
    epochs, max_steps = values.get("num_train_epochs"), values.get("max_steps")
    if not _number(epochs):
        return
    if _number(max_steps) and max_steps > 0:
        if epochs < 0:
            raise ValueError(
                f"`num_train_epochs` is {epochs}; with `max_steps: {max_steps}` it is ignored, so drop it "
                "(or give a count >= 0)."
            )
    elif not epochs > 0:
        raise ValueError(
            f"`num_train_epochs` must be > 0 (got {epochs}), or set `max_steps`; {epochs} epochs would train "
            "0 steps and save the untrained model."
        )
