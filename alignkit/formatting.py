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


def print_table(console, title: str, header, rows, *, left: int = 1) -> None:
    """A table that never cuts a number or a name on a narrow terminal.

    rich shrinks a table wider than the terminal by cutting cells (``1.745…``, ``finet…`` for both
    ``finetune_full`` and ``finetune_retain90``). When the full table does not fit, each row is
    printed as its own block of ``column  value`` lines instead, so every value stays whole.
    ``left``: the first ``left`` columns are left-aligned (names), the rest right-aligned (numbers).
    """
    from rich.measure import Measurement
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < left else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    wide = console.options.update_width(1_000_000)  # measured unconstrained: the width it needs
    if Measurement.get(console, wide, table).maximum <= console.width:
        console.print(table)
        return
    console.print(f"[italic]{title}[/]", highlight=False)  # one block per row: the table is too wide
    for row in rows:
        block = Table(show_header=False, box=None, padding=(0, 1), title=str(row[0]), title_justify="left")
        block.add_column(overflow="fold", style="dim")
        block.add_column(overflow="fold")
        for name, value in zip(header[1:], row[1:]):
            block.add_row(name, value)
        console.print(block)
