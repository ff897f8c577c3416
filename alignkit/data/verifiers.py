"""Verifiers: label a completion of a row as right or wrong (or score it), for AFT and answer accuracy.

A verifier is any callable ``(row, completion) -> label``: a ``bool`` (binary feedback: is the final
answer right?) or a finite ``float`` (ranking feedback, higher is better). It gets the row as the data
gave it (e.g. GSM8K's ``{"question", "answer"}``) and the completion's text. In a recipe it is named:
a built-in (:data:`VERIFIERS`) or ``package.module:function``.

Built-ins:

* ``gsm8k``: the final answer is the number after the last ``####``, else after the last "The answer
  is"; the gold one is read the same way from the row's ``answer`` / ``completion`` (or a ``final``
  field); numbers compare equal after normalisation (commas, ``$``, ``%``, a trailing period and
  surrounding spaces removed; ``18``, ``18.0`` and ``18.00`` are equal), other text exactly after
  whitespace normalisation. The extraction rule is ours (AFT's paper does not state one; spec
  ``methods-alignment-2.md`` §2, pipeline step 3).
* ``arithmetic`` and ``arithmetic_steps``: the synthetic task of :mod:`alignkit.data.synthetic.reasoning`
  (exact final answer; and the step-level ranking score).

:func:`verify` runs a verifier on one row and turns a raise or a non-label into one line naming the row.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

from alignkit.data.answers import answers_match, extract_final_answer, gold_answer
from alignkit.data.synthetic import reasoning
from alignkit.errors import UserError

Verifier = Callable[[dict, str], "bool | float"]


class VerifierError(UserError):
    """A verifier that could not be found, raised, or returned something that is not a label."""


def gsm8k_verifier(row: dict, completion: str) -> bool:
    """GSM8K-style: the completion's final answer equals the row's (numeric equality after normalisation)."""
    gold = gold_answer(row)
    if gold is None:
        raise ValueError("the row has no gold answer (`final`, or `answer` ending in `#### N`)")
    return answers_match(extract_final_answer(completion), gold)


VERIFIERS: dict[str, Verifier] = {
    "gsm8k": gsm8k_verifier,
    "arithmetic": reasoning.verify_answer,
    "arithmetic_steps": reasoning.step_score,
}


def resolve_verifier(spec: str | Verifier) -> Verifier:
    """A callable as given, a built-in by name, or ``package.module:function``; an unknown name is one line."""
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise VerifierError(f"verifier must be a name or a callable, got {type(spec).__name__}")
    if spec in VERIFIERS:
        return VERIFIERS[spec]
    if ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as error:
            raise VerifierError(
                f"verifier {spec!r}: cannot import it ({error}); check the module:function path"
            ) from None
        if not callable(fn):
            raise VerifierError(f"verifier {spec!r} is not callable")
        return fn
    raise VerifierError(
        f"unknown verifier {spec!r}; built-ins: {', '.join(VERIFIERS)}, or give package.module:function"
    )


def verify(
    verifier: Verifier, row: dict, completion: str, *, index: int, source: str = "dataset"
) -> bool | float:
    """``verifier(row, completion)`` checked to be a label; a raise or a non-label names the row in one line."""
    name = getattr(verifier, "__qualname__", type(verifier).__name__)
    try:
        label = verifier(row, completion)
    except Exception as error:  # noqa: BLE001 - the user's code: any failure becomes one line naming the row
        raise VerifierError(
            f"{source}, row {index}: verifier {name} raised {type(error).__name__}: {error}"
        ) from None
    if hasattr(label, "item") and getattr(label, "ndim", 1) == 0:  # numpy / torch scalars
        label = label.item()
    if isinstance(label, bool):
        return label
    if isinstance(label, int | float) and math.isfinite(label):
        return float(label)
    raise VerifierError(
        f"{source}, row {index}: verifier {name} returned {label!r}; it must return a bool (right/wrong) "
        "or a finite float (a score, higher is better)"
    )
