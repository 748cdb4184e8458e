"""Checks of terminal output at a width: no line too long, no number cut or wrapped.

:func:`render` prints a rich renderable at a fixed width, as a terminal of that many columns
shows it; :func:`check_fitted` fails on a number cut by an ellipsis (``10,1…``), on any of the
given numbers missing whole from one line, and on a table line wider than the terminal (other
lines may be one long line on purpose: the terminal wraps them, nothing cuts them).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from typing import Final

from rich.console import Console, RenderableType
from rich.text import Text

__all__ = ["ELLIPSIS_NEXT_TO_DIGIT", "check_fitted", "column_text", "hidden_columns", "render"]

#: An ellipsis that cut a number: a digit right before or after it.
ELLIPSIS_NEXT_TO_DIGIT: Final = re.compile(r"\d…|…\d")
#: Characters that only the borders of a table are made of.
_BORDERS: Final = frozenset("│┃┏┓┗┛┡┩└┘┌┐━─")
_HIDDEN: Final = re.compile(r"not shown at \d+ columns: (.*?) \(widen the terminal\)", re.DOTALL)


def render(renderable: RenderableType, width: int) -> str:
    """``renderable`` as a terminal ``width`` columns wide shows it (plain text)."""
    console = Console(
        width=width, record=True, color_system=None, force_terminal=False, file=io.StringIO()
    )
    console.print(renderable)
    return console.export_text()


def hidden_columns(text: str) -> list[str]:
    """The headers a fitted table says it did not show (its footnote), in its words."""
    found = _HIDDEN.search(" ".join(text.split()))
    if found is None:
        return []
    return [name.strip() for name in " ".join(found.group(1).split()).split(",")]


def column_text(text: str, index: int) -> str:
    """The cells of column ``index`` of the table in ``text``, top to bottom, joined: a name
    folded over several lines reads whole again."""
    rows = [line.split("│") for line in text.splitlines() if line.startswith("│")]
    return "".join(cells[index + 1].strip() for cells in rows)


def check_fitted(text: str, width: int, numbers: Iterable[str] = ()) -> None:
    """Fail unless every line of a table in ``text`` fits ``width``, no number is cut by an
    ellipsis and each of ``numbers`` (cells as markup) appears whole on one line."""
    lines = text.splitlines()
    wide = [line for line in lines if _BORDERS.intersection(line) and len(line.rstrip()) > width]
    assert not wide, f"table lines wider than {width} columns:\n" + "\n".join(wide)
    cut = [line for line in lines if ELLIPSIS_NEXT_TO_DIGIT.search(line)]
    assert not cut, "numbers cut:\n" + "\n".join(cut)
    missing = [n for n in numbers if not any(Text.from_markup(n).plain in line for line in lines)]
    assert not missing, f"numbers not shown whole: {missing}\n{text}"
