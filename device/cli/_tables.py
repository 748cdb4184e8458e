"""Tables that fit the terminal: names wrap, numbers are never cut, columns give way by priority.

Rich shrinks a table that is wider than the terminal by cutting cells with an ellipsis, numbers
included (``10,1…``). :func:`fit_table` lays the table out itself instead: every number column
is exactly as wide as its widest cell, name and text columns take what is left and wrap, and
when even that does not fit, the columns that matter least are hidden (a line under the table
says which). Numbers themselves are made short in :mod:`device.cli._units`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from rich.table import Table
from rich.text import Text

__all__ = ["Col", "fit_table", "table_width"]

Kind = Literal["number", "name", "text"]
#: Width a name column keeps before it wraps: a device id such as ``node-0000``.
NAME_MIN_WIDTH: Final = 9
#: Width a text column keeps before it wraps.
TEXT_MIN_WIDTH: Final = 10


@dataclass(frozen=True, slots=True)
class Col:
    """One column of a :func:`fit_table`.

    ``kind``: ``number`` cells are never wrapped or cut (right-aligned), ``name`` cells (device
    ids, layer names) and ``text`` cells wrap when the terminal is narrow. ``hide``: 0 for a
    column always shown; among the others, the highest is hidden first when the table does not
    fit. ``legend``: what the header means, said under the table while the column is shown.
    """

    header: str
    kind: Kind = "number"
    hide: int = 0
    legend: str | None = None

    def __post_init__(self) -> None:
        if not self.header.strip():
            raise ValueError(f"a column needs a header, not {self.header!r}")
        if self.hide < 0:
            raise ValueError(f"hide must be >= 0, not {self.hide} (column {self.header!r})")


def _cell_len(markup: str) -> int:
    return Text.from_markup(markup).cell_len


def _longest_word(markup: str) -> int:
    return max((len(word) for word in Text.from_markup(markup).plain.split()), default=0)


def table_width(widths: Sequence[int]) -> int:
    """Columns this module's tables take for cells ``widths`` wide: a padding of one on each
    side of every cell and a border between and around the columns."""
    return sum(widths) + 3 * len(widths) + 1


@dataclass(frozen=True, slots=True)
class _Measure:
    """A column's narrowest width without cutting a number or a word of its header, and its
    width with nothing wrapped."""

    least: int
    natural: int


def _measure(col: Col, cells: Sequence[str]) -> _Measure:
    widest = max((_cell_len(cell) for cell in cells), default=0)
    natural = max(widest, _cell_len(col.header), 1)
    header_word = _longest_word(col.header)
    if col.kind == "number":
        least = max(widest, header_word, 1)
    else:
        floor = NAME_MIN_WIDTH if col.kind == "name" else TEXT_MIN_WIDTH
        least = max(min(natural, floor), header_word, 1)
    return _Measure(least, natural)


def _layout(cols: Sequence[Col], measures: Sequence[_Measure], width: int) -> list[int]:
    """The columns shown (indices): the least important hidden until the rest fit ``width``."""
    shown = list(range(len(cols)))
    while table_width([measures[i].least for i in shown]) > width:
        hideable = [i for i in shown if cols[i].hide > 0]
        if not hideable:
            break
        shown.remove(max(hideable, key=lambda i: (cols[i].hide, i)))
    return shown


def _widths(cols: Sequence[Col], measures: Sequence[_Measure], width: int) -> list[int]:
    """Cell widths of the shown columns: each at least its ``least``; what is left goes to names,
    then text, then headers that would otherwise wrap."""
    widths = [m.least for m in measures]
    spare = width - table_width(widths)
    for kind in ("name", "text", "number"):
        for i, (col, measure) in enumerate(zip(cols, measures, strict=True)):
            if col.kind == kind and spare > 0:
                extra = min(spare, measure.natural - widths[i])
                widths[i] += extra
                spare -= extra
    return widths


def fit_table(
    cols: Sequence[Col],
    rows: Sequence[Sequence[str]],
    width: int,
    *,
    title: str | None = None,
    caption: str | None = None,
) -> Table:
    """A table of ``rows`` (cells as rich markup) no wider than ``width`` if it can be.

    Under the table: ``caption``, the legends of the columns shown, and which columns were
    hidden to fit.
    """
    for row in rows:
        if len(row) != len(cols):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(cols)} columns")
    measures = [_measure(col, [row[i] for row in rows]) for i, col in enumerate(cols)]
    shown = _layout(cols, measures, width)
    shown_cols = [cols[i] for i in shown]
    shown_measures = [measures[i] for i in shown]
    fixed = table_width([m.natural for m in shown_measures]) > width
    widths = _widths(shown_cols, shown_measures, width) if fixed else None
    notes = [caption] if caption else []
    legends = [col.legend for col in shown_cols if col.legend]
    if legends:
        notes.append("; ".join(legends))
    hidden = [col.header for i, col in enumerate(cols) if i not in shown]
    if hidden:
        notes.append(f"not shown at {width} columns: {', '.join(hidden)} (widen the terminal)")
    table = Table(
        title=title,
        title_justify="left",
        caption="\n".join(notes) or None,
        caption_justify="left",
    )
    for n, (col, measure) in enumerate(zip(shown_cols, shown_measures, strict=True)):
        table.add_column(
            col.header,
            justify="right" if col.kind == "number" else "left",
            overflow="fold",
            width=None if widths is None else widths[n],
            min_width=measure.least if col.kind == "number" else None,
        )
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table
