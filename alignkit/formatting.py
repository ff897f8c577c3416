"""The one number formatter of alignkit's tables, reports and cards.

Each caller keeps the convention its readers know (reports: fixed 4 decimals; cards and the train
summary: 4 significant digits), chosen with keywords rather than written again.
"""

from __future__ import annotations

from typing import Any


def format_number(
    value: Any,
    *,
    spec: str = ".4f",
    sci: bool = False,
    small: float | None = 1e-3,
    large: float | None = None,
    missing: str = "—",
) -> str:
    """``value`` as text: floats with ``spec``, or ``.3e`` when ``sci`` or when a nonzero ``|value|`` is
    below ``small`` or at least ``large`` (``None`` turns that bound off); ``None`` is ``missing``."""
    if value is None:
        return missing
    if isinstance(value, float):
        tiny = small is not None and value != 0 and abs(value) < small
        huge = large is not None and value != 0 and abs(value) >= large
        return f"{value:.3e}" if sci or tiny or huge else format(value, spec)
    return str(value)
