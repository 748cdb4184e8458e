"""Time series read from CSV files: irradiance (W/m2) and temperature (degC) over time.

A trace file has a header row naming a time column (``time_s``: seconds from the start, or
``time``: ISO 8601 date-times, the first one being t = 0) and one value column; lines starting
with ``#`` are comments (a file says where its numbers come from there). Times must increase.
Every error names the file and the row (a :class:`~device.energy.errors.TraceError`).
A trace is periodic: :meth:`Trace.at` past its end starts again from its beginning, so a week
of irradiance stands for every week of a year-long simulation.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from device.energy.errors import TraceError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    """Values at increasing times (seconds from the start), ``period_s`` long before repeating.

    ``period_s`` is the span of the samples plus one step (the last sample holds until the
    period ends), so an hourly week is exactly 7 x 86400 s.
    """

    name: str
    times_s: FloatArray
    values: FloatArray
    period_s: float

    def __post_init__(self) -> None:
        if self.times_s.shape != self.values.shape or self.times_s.ndim != 1:
            raise TraceError(f"{self.name}: times and values must be 1-D of one length")
        if len(self.times_s) == 0:
            raise TraceError(f"{self.name}: no rows")
        if not self.period_s > 0:
            raise TraceError(f"{self.name}: period must be > 0")

    def at(self, t_s: FloatArray | float) -> FloatArray:
        """The value in force at ``t_s`` (seconds, any shape): the last sample at or before
        ``t_s`` modulo the period (a step function, as hourly data means)."""
        local = np.mod(np.asarray(t_s, dtype=np.float64) - self.times_s[0], self.period_s)
        index = np.searchsorted(self.times_s - self.times_s[0], local, side="right") - 1
        return self.values[np.clip(index, 0, len(self.values) - 1)]

    def mean(self) -> float:
        """Time-weighted mean over one period."""
        edges = np.append(self.times_s, self.times_s[0] + self.period_s)
        return float(np.sum(self.values * np.diff(edges)) / self.period_s)


def _time(
    text: str, column: str, where: str, first: datetime | None
) -> tuple[float, datetime | None]:
    if column == "time_s":
        try:
            value = float(text)
        except ValueError:
            raise TraceError(f"{where}: time_s {text!r} is not a number") from None
        if not math.isfinite(value):
            raise TraceError(f"{where}: time_s {text!r} is not finite")
        return value, first
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TraceError(f"{where}: time {text!r} is not an ISO 8601 date-time") from None
    if first is None:
        first = when
    if (when.tzinfo is None) != (first.tzinfo is None):
        raise TraceError(f"{where}: time {text!r} mixes times with and without a time zone")
    return (when - first).total_seconds(), first


def parse_trace(
    text: str, label: str, value_columns: tuple[str, ...], *, minimum: float | None = None
) -> Trace:
    """A :class:`Trace` from CSV ``text`` whose value column is one of ``value_columns``;
    ``label`` names the file in errors; values below ``minimum`` are refused."""
    lines = [line for line in io.StringIO(text) if line.strip() and not line.startswith("#")]
    reader = csv.reader(lines)
    header = [name.strip() for name in next(reader, [])]
    time_cols = [name for name in ("time_s", "time") if name in header]
    value_cols = [name for name in value_columns if name in header]
    if not time_cols or not value_cols:
        raise TraceError(
            f"{label}: the header must name a time column (time_s or time) and one of "
            f"{', '.join(value_columns)}; got {header}"
        )
    time_col, value_col = time_cols[0], value_cols[0]
    ti, vi = header.index(time_col), header.index(value_col)
    times: list[float] = []
    values: list[float] = []
    first: datetime | None = None
    for row_number, row in enumerate(reader, start=2):
        where = f"{label}: row {row_number}"
        if len(row) != len(header):
            raise TraceError(f"{where}: {len(row)} fields, the header has {len(header)}")
        t, first = _time(row[ti], time_col, where, first)
        try:
            value = float(row[vi])
        except ValueError:
            raise TraceError(f"{where}: {value_col} {row[vi]!r} is not a number") from None
        if not math.isfinite(value) or (minimum is not None and value < minimum):
            raise TraceError(f"{where}: {value_col} {row[vi]!r} must be finite and >= {minimum}")
        if times and t <= times[-1]:
            raise TraceError(f"{where}: time {row[ti]!r} does not increase")
        times.append(t)
        values.append(value)
    if not times:
        raise TraceError(f"{label}: no rows")
    step = times[-1] - times[-2] if len(times) > 1 else 3600.0
    return Trace(
        label,
        np.asarray(times, dtype=np.float64),
        np.asarray(values, dtype=np.float64),
        times[-1] - times[0] + step,
    )


def load_trace(
    path: str | Path, value_columns: tuple[str, ...], *, minimum: float | None = None
) -> Trace:
    """:func:`parse_trace` of the file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{file}: cannot read: {exc}") from exc
    return parse_trace(text, str(file), value_columns, minimum=minimum)


__all__ = ["FloatArray", "Trace", "load_trace", "parse_trace"]
