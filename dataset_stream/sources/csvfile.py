"""``csv:PATH``: a CSV file of sensor readings, cut into windows.

The file has a header line, then one reading per line in time order: channel columns (numbers),
a label column and a session column (a subject, a recording, a day: what a test set must be
held out by). Options (:mod:`dataset_stream.sources.spec`: ``csv[key=value;...]:PATH``):

==============  ======================================================================
``y``           the label column (default ``label``): integers ``0..K-1`` or class names
``session``     the session column (default ``session``): integers or names
``x``           the channel columns, ``x=ax,ay,az`` (default: every other column but one
                named ``time``, ``timestamp`` or ``t``)
``window``      readings per sample ``W`` (default 1)
``stride``      readings between two window starts ``S`` (default ``W // 2``, 1 for W = 1)
``test``        the held-out sessions, ``test=s9,s10`` (default: the last ``max(1,
                round(3 * S / 11))`` of the ``S`` sorted sessions)
``classes``     the class names in label order, ``classes=sit,walk,run`` (default: the
                integers ``0..max`` for integer labels, else the sorted names)
==============  ======================================================================

A *run* is a stretch of consecutive lines with the same session and label; windows of ``W``
lines every ``S`` lines are cut inside each run, never across two, so a window is one activity
of one session. A window is a float32 sample ``[C, W]`` (channels first, for a 1-D CNN); with
``W = 1`` each line is a flat feature vector ``[C]`` (for an MLP). Each channel is standardised
with the mean and standard deviation of the training sessions' readings (the test sessions'
statistics are never used), as the ``watch`` source does: the model's input normalisation is
the identity. Bad data is one :class:`~dataset_stream.errors.DataError` naming the line and the
column: an empty cell, a line with more or fewer fields than the header, a value that is not a
finite number, an unknown or out-of-range label, and (:mod:`dataset_stream.sources.quality`)
one class only, too few windows of a class, too few sessions.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from dataset_stream.errors import DataError, SourceError
from dataset_stream.sources.base import ArrayStore, Dataset
from dataset_stream.sources.quality import Labelled, default_test_sessions
from dataset_stream.sources.spec import PathSpec, split_list

if TYPE_CHECKING:
    import _csv

__all__ = ["CSV_OPTIONS", "TIME_COLUMNS", "CsvOptions", "load_csv"]

CSV_OPTIONS: Final = ("x", "y", "session", "window", "stride", "test", "classes")
#: Columns left out of the default channels: a time stamp is no sensor reading.
TIME_COLUMNS: Final = ("time", "timestamp", "t")


@dataclass(frozen=True, slots=True)
class CsvOptions:
    """How to read a readings CSV (see the module docstring); ``stride`` None = the default."""

    x: tuple[str, ...] | None = None
    y: str = "label"
    session: str = "session"
    window: int = 1
    stride: int | None = None
    test: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise SourceError(f"csv option window={self.window}: must be >= 1")
        if self.stride is not None and self.stride < 1:
            raise SourceError(f"csv option stride={self.stride}: must be >= 1")
        if self.y == self.session:
            raise SourceError(f"csv options y and session both name column {self.y!r}")
        if self.x is not None and (not self.x or {self.y, self.session} & set(self.x)):
            raise SourceError(
                f"csv option x={','.join(self.x)}: name channels other than y and session"
            )
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise SourceError(f"csv option classes={','.join(self.classes)}: names must be unique")

    @property
    def step(self) -> int:
        """Readings between two window starts."""
        return self.stride or max(1, self.window // 2)

    @classmethod
    def of(cls, spec: PathSpec) -> CsvOptions:
        """The options of a ``csv[...]:PATH`` spec, checked."""
        spec.check_keys(CSV_OPTIONS)

        def number(key: str) -> int | None:
            value = spec.get(key)
            if value is None:
                return None
            try:
                return int(value)
            except ValueError:
                raise SourceError(f"csv option {key}={value!r}: not a whole number") from None

        def listed(key: str) -> tuple[str, ...] | None:
            value = spec.get(key)
            return None if value is None else split_list(value)

        return cls(
            x=listed("x"),
            y=spec.get("y") or "label",
            session=spec.get("session") or "session",
            window=1 if spec.get("window") is None else number("window") or 0,
            stride=number("stride"),
            test=listed("test"),
            classes=listed("classes"),
        )


@dataclass(frozen=True, slots=True, eq=False)
class _Table:
    """The parsed lines: ``values`` float64 ``[R, C]``, the label and session cell of each line
    and its line number in the file."""

    channels: tuple[str, ...]
    values: np.ndarray
    labels: list[str]
    sessions: list[str]
    lines: np.ndarray


def load_csv(path: str | Path, options: CsvOptions | None = None) -> Dataset:
    """Read a readings CSV into windows (see the module docstring)."""
    path = Path(path)
    options = options or CsvOptions()
    table = _read(path, options)
    y, classes = _labels(path, table, options)
    session, names = _sessions(table)
    if options.test is None:
        test = default_test_sessions(sorted(set(session.tolist())))
    else:
        test = _named_sessions(path, options, names)
    train = ~np.isin(session, test)
    values = table.values
    if train.any():
        mean = values[train].mean(axis=0)
        std = values[train].std(axis=0)
        values = (values - mean) / np.where(std > 1e-6, std, 1.0)
    x, starts = _windows(values.astype(np.float32), y, session, options)
    if len(starts) == 0:
        raise DataError(
            f"{path}: no run of {options.window} consecutive lines of one {options.session!r} "
            f"and one {options.y!r} (window={options.window}): use a shorter window",
            field=options.y,
        )
    by_id = {v: k for k, v in names.items()}
    Labelled(
        source=str(path),
        y=y[starts],
        session=session[starts],
        classes=classes,
        label_field=options.y,
        session_field=options.session,
        where=lambda i: f"line {int(table.lines[starts[i]])}",
        session_name=lambda s: by_id.get(s, str(s)),
        unit="window" if options.window > 1 else "line",
    ).check(test)
    sessions = sorted(set(session.tolist()))
    return Dataset(
        name=f"csv:{path.name}",
        store=ArrayStore(x),
        y=y[starts],
        session=session[starts],
        origin=np.arange(len(starts), dtype=np.int64),
        classes=classes,
        train_sessions=tuple(s for s in sessions if s not in test),
        test_sessions=tuple(test),
    )


def _read(path: Path, options: CsvOptions) -> _Table:
    """Every data line of ``path``, checked cell by cell."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return _parse(path, csv.reader(fh), options)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path} is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise SourceError(f"{path}: not a CSV file: {exc}") from exc


def _parse(path: Path, reader: _csv.Reader, options: CsvOptions) -> _Table:
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: the file is empty; its first line must name the columns")
    names = [name.strip() for name in header]
    channels = _channels(path, names, options)
    x_at = [names.index(n) for n in channels]
    y_at, s_at = names.index(options.y), names.index(options.session)
    values: list[list[float]] = []
    labels: list[str] = []
    sessions: list[str] = []
    lines: list[int] = []
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line
        if len(row) != len(names):
            raise DataError(
                f"{path} line {line}: {len(row)} fields, the header has {len(names)} "
                f"({', '.join(names)})",
                row=line,
            )
        values.append([_number(path, line, names[i], row[i]) for i in x_at])
        label, session = row[y_at].strip(), row[s_at].strip()
        for column, cell in ((options.y, label), (options.session, session)):
            if not cell:
                raise DataError(
                    f"{path} line {line}, column {column!r}: empty cell", field=column, row=line
                )
        labels.append(label)
        sessions.append(session)
        lines.append(line)
    if not lines:
        raise DataError(f"{path}: no data lines after the header")
    return _Table(
        channels=tuple(channels),
        values=np.array(values, dtype=np.float64),
        labels=labels,
        sessions=sessions,
        lines=np.array(lines, dtype=np.int64),
    )


def _channels(path: Path, names: list[str], options: CsvOptions) -> list[str]:
    """The channel columns of a header ``names``, checked with the label and session ones."""
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{path} line 1: column {i + 1} has no name", row=1)
        if names.index(name) != i:
            raise DataError(f"{path} line 1: column {name!r} appears twice", field=name, row=1)
    for key, column in (("y", options.y), ("session", options.session)):
        if column not in names:
            raise DataError(
                f"{path}: no column {column!r} for {key} (columns: {', '.join(names)}); name it "
                f"with the option {key}=COLUMN",
                field=column,
            )
    if options.x is not None:
        for name in options.x:
            if name not in names:
                raise DataError(
                    f"{path}: no column {name!r} for x (columns: {', '.join(names)})", field=name
                )
        return list(options.x)
    skip = {options.y, options.session}
    channels = [n for n in names if n not in skip and n.lower() not in TIME_COLUMNS]
    if not channels:
        raise DataError(f"{path}: no channel column besides {options.y!r} and {options.session!r}")
    return channels


def _number(path: Path, line: int, column: str, cell: str) -> float:
    text = cell.strip()
    if not text:
        raise DataError(
            f"{path} line {line}, column {column!r}: empty cell", field=column, row=line
        )
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"{path} line {line}, column {column!r}: {text!r} is not a number",
            field=column,
            row=line,
        ) from None
    if not np.isfinite(value):
        raise DataError(
            f"{path} line {line}, column {column!r}: {text!r} is not a finite number",
            field=column,
            row=line,
        )
    return value


def _labels(path: Path, table: _Table, options: CsvOptions) -> tuple[np.ndarray, tuple[str, ...]]:
    """Label index of each line and the class names (see the ``classes`` option)."""
    column = options.y
    numbers = [_integer(cell) for cell in table.labels]
    if all(n is not None for n in numbers):
        ints = np.array(numbers, dtype=np.int64)
        count = len(options.classes) if options.classes is not None else int(ints.max()) + 1
        bad = np.flatnonzero((ints < 0) | (ints >= count))
        if len(bad):
            i = int(bad[0])
            named = " (classes names that many)" if options.classes is not None else ""
            raise DataError(
                f"{path} line {int(table.lines[i])}, column {column!r}: label {ints[i]} is out "
                f"of range 0..{count - 1}{named}",
                field=column,
                row=int(table.lines[i]),
            )
        classes = options.classes or tuple(str(k) for k in range(count))
        return ints, classes
    classes = options.classes or tuple(sorted(set(table.labels)))
    index = {name: k for k, name in enumerate(classes)}
    out = np.empty(len(table.labels), dtype=np.int64)
    for i, cell in enumerate(table.labels):
        if cell not in index:
            raise DataError(
                f"{path} line {int(table.lines[i])}, column {column!r}: {cell!r} is not one of "
                f"the classes {', '.join(classes)}",
                field=column,
                row=int(table.lines[i]),
            )
        out[i] = index[cell]
    return out, classes


def _sessions(table: _Table) -> tuple[np.ndarray, dict[str, int]]:
    """Session id of each line (the integers themselves, else ids in sorted order) and the id
    of each name as the file spells it."""
    numbers = [_integer(cell) for cell in table.sessions]
    if all(n is not None for n in numbers):
        ids = np.array(numbers, dtype=np.int64)
        return ids, {cell: int(n) for cell, n in zip(table.sessions, numbers, strict=True)}  # type: ignore[arg-type]
    names = {name: k for k, name in enumerate(sorted(set(table.sessions)))}
    return np.array([names[cell] for cell in table.sessions], dtype=np.int64), names


def _named_sessions(path: Path, options: CsvOptions, names: dict[str, int]) -> tuple[int, ...]:
    """The ids of the ``test`` option's sessions (as spelled in the file, or the same integer)."""
    assert options.test is not None
    ids = set()
    for name in options.test:
        number = _integer(name)
        if name in names:
            ids.add(names[name])
        elif (
            number is not None
            and all(_integer(k) is not None for k in names)
            and number in names.values()
        ):
            ids.add(number)
        else:
            raise DataError(
                f"{path}: test session {name!r} is not in column {options.session!r} "
                f"(sessions: {', '.join(sorted(names, key=_order))})",
                field=options.session,
            )
    return tuple(sorted(ids))


def _order(name: str) -> tuple[int, str]:
    number = _integer(name)
    return (0, f"{number:020d}") if number is not None and number >= 0 else (1, name)


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _windows(
    values: np.ndarray, y: np.ndarray, session: np.ndarray, options: CsvOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``[K, C, W]`` (``[K, C]`` for W = 1) cut inside each run of one session and label,
    and the line index of each window's first reading."""
    width, step = options.window, options.step
    if width == 1 and step == 1:
        return np.ascontiguousarray(values), np.arange(len(values), dtype=np.int64)
    change = np.flatnonzero((np.diff(y) != 0) | (np.diff(session) != 0)) + 1
    bounds = np.concatenate([[0], change, [len(values)]])
    starts = np.concatenate(
        [
            np.arange(int(a), int(b) - width + 1, step, dtype=np.int64)
            for a, b in itertools.pairwise(bounds)
        ]
        or [np.zeros(0, np.int64)]
    )
    if width == 1:
        return np.ascontiguousarray(values[starts]), starts
    windows = values[starts[:, None] + np.arange(width)[None, :]]  # [K, W, C]
    return np.ascontiguousarray(windows.transpose(0, 2, 1)), starts
