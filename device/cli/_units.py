"""Numbers for terminal tables: short enough for an 80-column terminal, never cut.

Every table of the command line formats its numbers here, so that one quantity reads the same
in every command: three significant digits, and a suffix where the number is large
(``10,174 h`` is ``10.2k h``, ``1,200,000 J`` is ``1.2 MJ``). A figure so written is at most
``digits`` digits, a point, a sign and a suffix long, whatever its size; the exact values are
in each command's ``--json`` or CSV output.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["DASH", "compact", "count", "hours", "mib", "optional", "si"]

#: What a table shows for a value it does not have.
DASH: Final = "-"
#: (scale, prefix) from the largest down: a value is written in the first scale it reaches.
_LARGE: Final = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_SMALL: Final = ((1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p"))
MIB_BYTES: Final = 1024 * 1024


def _rounded(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits (so 999.6 is 1000 before a scale is
    chosen, and reads ``1k``, not ``1e+03``)."""
    return float(f"{value:.{digits - 1}e}")


def _scaled(value: float, digits: int, scales: tuple[tuple[float, str], ...]) -> tuple[str, str]:
    """The digits of ``value`` in the first scale it reaches, and that scale's prefix."""
    rounded = _rounded(value, digits)
    for scale, prefix in scales:
        if abs(rounded) >= scale:
            return f"{rounded / scale:.{digits}g}", prefix
    scale, prefix = scales[-1]
    return f"{rounded / scale:.{digits}g}", prefix


def si(value: float, unit: str = "", digits: int = 3) -> str:
    """``value`` in ``unit`` with an SI prefix: 1.2e6 J is ``1.2 MJ``, 0.00123 s ``1.23 ms``,
    0 is ``0 J``; an infinite or missing value is written as it is (``inf s``)."""
    if not math.isfinite(value):
        return f"{value} {unit}".rstrip()
    if value == 0:
        return f"0 {unit}".rstrip()
    number, prefix = _scaled(value, digits, (*_LARGE, *_SMALL))
    return f"{number} {prefix}{unit}".rstrip()


def compact(value: float, digits: int = 3) -> str:
    """A plain number, with k, M, G, T, P or E from a thousand up: 10174 is ``10.2k``, 25_800 is
    ``25.8k``, 0.772 is ``0.772``, 77 is ``77``."""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(_rounded(value, digits)) < 1000:
        if float(value).is_integer():
            return str(int(value))
        return f"{_rounded(value, digits):.{digits}g}"
    number, prefix = _scaled(value, digits, _LARGE)
    return f"{number}{prefix}"


def count(value: int) -> str:
    """A count: exact below 10,000 (``1500``), :func:`compact` from there (``25.8k``)."""
    return str(value) if abs(value) < 10_000 else compact(value)


def hours(value_h: float | None) -> str:
    """A duration in hours: ``10.2k h``, ``225 h``, ``4.26 h``; ``-`` when unknown."""
    return DASH if value_h is None else f"{compact(value_h)} h"


def mib(value_bytes: float) -> str:
    """A size in MiB as :func:`compact` writes it: ``8.79``, ``188``, ``1.46k`` (the unit is
    the column's)."""
    return compact(value_bytes / MIB_BYTES)


def optional(value: float | None, spec: str) -> str:
    """``value`` in the format ``spec`` (``.3f``, ``.2%``), or ``-`` when it is missing."""
    return DASH if value is None else format(value, spec)
