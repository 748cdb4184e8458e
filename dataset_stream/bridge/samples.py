"""One raw record -> one checked :class:`Sample`, or a :class:`Rejected` with its reason.

A record is a JSON object (a line of a file or an MQTT payload), a CSV row, or a raw MQTT payload
of little-endian float32 values. The sample is checked against what the model takes
(:class:`SampleSpec`): its number of values (a flat list is reshaped; a nested list must have the
model's shape exactly), its type (numbers only, never strings or booleans), finite values, the
dtype's range (``uint8``: integers 0..255) and a label below the class count. Nothing here raises
on bad input: every failure is a :class:`Rejected` naming one of :data:`REASONS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np

from dataset_stream.protocol.topics import is_device_id

#: Why a sample was dropped; the order is the order of the summary's columns.
REASONS: Final = (
    "bad_format",  # not JSON / not an object / not UTF-8 / a CSV row with the wrong cells
    "too_large",  # a record longer than the bridge reads
    "bad_device",  # no device id, or not one that matches [A-Za-z0-9_-]{1,64}
    "no_x",  # no sample field
    "bad_type",  # the sample is not a (nested) list of numbers
    "bad_length",  # the wrong number of values, or a nested list of another shape
    "non_finite",  # NaN or infinity
    "out_of_range",  # beyond float32, or not an integer 0..255 for a uint8 model
    "bad_label",  # a label that is not an integer in 0..classes-1
    "bad_time",  # a time field that is not a finite number
    "window_full",  # the window already holds as many samples as one payload may
    "refused",  # the codec refused the message built from it (should not happen)
)
#: Where a record may say nothing about its device (used in the summary).
NO_DEVICE: Final = "(none)"
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)


class RecordKind(StrEnum):
    JSON = "json"
    CSV = "csv"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class Record:
    """One raw input, as a source read it.

    ``body``: the JSON text or raw payload (bytes), or a CSV row (its cells by column name);
    ``where``: a place to name in a log line (``line 17``, ``topic sensors/a/reading``);
    ``device``: the device id the place itself gives (an MQTT topic level), if any;
    ``arrival``: wall-clock unix seconds the record was read.
    """

    kind: RecordKind
    body: bytes | Mapping[str, str]
    where: str
    arrival: float
    device: str | None = None
    defect: str | None = None  # what the source found wrong: "too_large" or "bad_format"


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """What the model takes: per-sample ``shape``, ``dtype`` (uint8 or float32), class count."""

    shape: tuple[int, ...]
    dtype: str
    num_classes: int

    def __post_init__(self) -> None:
        if not self.shape or not all(isinstance(d, int) and d > 0 for d in self.shape):
            raise ValueError(f"sample shape {self.shape!r} must be positive integers")
        if self.dtype not in ("uint8", "float32"):
            raise ValueError(f"sample dtype {self.dtype!r} is not uint8 or float32")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, not {self.num_classes!r}")

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass(frozen=True, slots=True)
class Fields:
    """Where a record keeps its parts: the sample (``x``; CSV: columns ``x0``, ``x1``, ...), the
    label, the time and the device; ``device`` (fixed) wins over ``device_field`` and the
    record's own place (an MQTT topic level)."""

    x: str = "x"
    label: str = "y"
    time: str = "t"
    device_field: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("x", "label", "time"):
            if not getattr(self, name):
                raise ValueError(f"the {name} field name must not be empty")
        if self.device is not None and not is_device_id(self.device):
            raise ValueError(f"device id {self.device!r} does not match [A-Za-z0-9_-]{{1,64}}")
        if self.device_field == "":
            raise ValueError("the device field name must not be empty")


@dataclass(frozen=True, slots=True, eq=False)
class Sample:
    """A checked sample: ``x`` of the model's shape and dtype, ``y`` None when unlabelled,
    ``t`` the record's own time (None when it has none)."""

    device: str
    x: np.ndarray
    y: int | None
    t: float | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that is not forwarded: ``reason`` (one of :data:`REASONS`) and why."""

    device: str
    reason: str
    detail: str

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}")


class _Bad(Exception):
    """Internal: a record fails one check (converted to :class:`Rejected` at the edge)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_record(record: Record, spec: SampleSpec, fields: Fields) -> Sample | Rejected:
    """The sample in ``record``, or why it is rejected; never raises on bad input.

    A raw payload holds ``prod(shape)`` little-endian float32 values and no label.
    """
    device = fields.device or (record.device if is_device_id(record.device) else None) or NO_DEVICE
    try:
        if record.defect == "too_large":
            raise _Bad("too_large", "the record is longer than the bridge reads")
        if record.defect is not None:
            raise _Bad("bad_format", "a CSV row whose cells do not match the header")
        if record.kind is RecordKind.RAW:
            device = _device({}, record, fields)
            return Sample(device, _raw(record.body, spec), None, None)
        obj = _as_object(record)
        device = _device(obj, record, fields)
        text = record.kind is RecordKind.CSV  # CSV cells are text
        x = _sample(obj, record.kind, spec, fields)
        y = _label(obj.get(fields.label), spec, text=text)
        t = _time(obj.get(fields.time), text=text)
    except _Bad as bad:
        return Rejected(device, bad.reason, f"{record.where}: {bad.detail}")
    return Sample(device, x, y, t)


# -- the parts of a record -----------------------------------------------------------------------


def _as_object(record: Record) -> Mapping[str, Any]:
    body = record.body
    if record.kind is RecordKind.CSV:
        assert isinstance(body, Mapping)
        return {k: (v if v != "" else None) for k, v in body.items()}
    assert isinstance(body, bytes)
    try:
        obj = json.loads(body)
    # ValueError: bad JSON, bad UTF-8, an integer literal longer than Python converts
    except (ValueError, RecursionError) as exc:
        raise _Bad("bad_format", f"not JSON: {_short(exc)}") from None
    if not isinstance(obj, dict):
        raise _Bad("bad_format", f"a JSON {type(obj).__name__}, not an object")
    return obj


def _device(obj: Mapping[str, Any], record: Record, fields: Fields) -> str:
    if fields.device is not None:
        return fields.device
    if fields.device_field is not None and fields.device_field in obj:
        value = obj[fields.device_field]
        if not is_device_id(value):
            raise _Bad("bad_device", f"device {_short(value)} is not [A-Za-z0-9_-]{{1,64}}")
        assert isinstance(value, str)
        return value
    if record.device is not None:
        if not is_device_id(record.device):
            raise _Bad("bad_device", f"topic level {record.device!r} is not a device id")
        return record.device
    raise _Bad("bad_device", f"no device field {fields.device_field!r}")


def _sample(
    obj: Mapping[str, Any], kind: RecordKind, spec: SampleSpec, fields: Fields
) -> np.ndarray:
    if kind is RecordKind.CSV:
        cells = [obj.get(f"{fields.x}{i}") for i in range(spec.size)]
        values: list[Any] = [_cell_number(c) for c in cells]
    else:
        if fields.x not in obj or obj[fields.x] is None:
            raise _Bad("no_x", f"no sample field {fields.x!r}")
        values = _leaves(obj[fields.x], spec.shape)
    return _to_array(values, spec)


def _leaves(value: Any, shape: tuple[int, ...]) -> list[Any]:
    """The values of a flat list of ``prod(shape)`` numbers or a nested list of ``shape``."""
    if not isinstance(value, list):
        raise _Bad("bad_type", f"the sample is a {type(value).__name__}, not a list")
    size = math.prod(shape)
    if value and not isinstance(value[0], list):  # flat
        if len(value) != size:
            raise _Bad("bad_length", f"{len(value)} values, the model takes {size}")
        return value
    level: list[Any] = [value]
    for depth, dim in enumerate(shape):
        below: list[Any] = []
        for item in level:
            if not isinstance(item, list):
                raise _Bad("bad_length", f"a value where the model has a dimension {depth}")
            if len(item) != dim:
                raise _Bad("bad_length", f"{len(item)} items at depth {depth}, want {dim}")
            below.extend(item)
        level = below
    return level


def _cell_number(cell: Any) -> float:
    if cell is None:
        raise _Bad("bad_length", "an empty sample cell")
    try:
        return float(cell)
    except ValueError:
        raise _Bad("bad_type", f"cell {_short(cell)} is not a number") from None


def _to_array(values: Sequence[Any], spec: SampleSpec) -> np.ndarray:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad("bad_type", f"value {_short(value)} is not a number")
    try:
        wide = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        raise _Bad("out_of_range", "a value beyond float32") from None
    if not np.isfinite(wide).all():
        raise _Bad("non_finite", "NaN or infinite value")
    if spec.dtype == "uint8":
        if not ((wide >= 0) & (wide <= 255) & (wide == np.round(wide))).all():
            raise _Bad("out_of_range", "the model takes uint8: values must be integers 0..255")
        return wide.astype(np.uint8).reshape(spec.shape)
    if (np.abs(wide) > _FLOAT32_MAX).any():
        raise _Bad("out_of_range", "a value beyond float32")
    return wide.astype(np.float32).reshape(spec.shape)


def _label(value: Any, spec: SampleSpec, *, text: bool) -> int | None:
    if value is None:
        return None
    if text and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise _Bad("bad_label", f"label {_short(value)} is not an integer") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("bad_label", f"label {_short(value)} is not an integer")
    if not 0 <= value < spec.num_classes:
        raise _Bad("bad_label", f"label {_short(value)} is not in 0..{spec.num_classes - 1}")
    return value


def _time(value: Any, *, text: bool) -> float | None:
    if value is None:
        return None
    if text and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _Bad("bad_time", f"time {_short(value)} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad("bad_time", f"time {_short(value)} is not a number")
    try:
        t = float(value)
    except OverflowError:
        raise _Bad("bad_time", "time beyond float") from None
    if not math.isfinite(t):
        raise _Bad("bad_time", f"time {t} is not finite")
    return t


def _raw(body: bytes | Mapping[str, str], spec: SampleSpec) -> np.ndarray:
    assert isinstance(body, bytes)
    if len(body) != 4 * spec.size:
        raise _Bad("bad_length", f"{len(body)} bytes, the model takes {spec.size} float32 values")
    return _to_array(np.frombuffer(body, dtype="<f4").astype(np.float64).tolist(), spec)


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (hostile input can be megabytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return "a huge integer"
    if isinstance(value, list | dict) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} items"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_csv_header(columns: Sequence[str], spec: SampleSpec, fields: Fields) -> None:
    """A CSV header must name ``{x}0`` .. ``{x}{size-1}`` (the model's values, in order of the
    index, anywhere in the row) and no other ``{x}N`` column; raise ``SourceError`` if not."""
    from dataset_stream.errors import SourceError

    wanted = {f"{fields.x}{i}" for i in range(spec.size)}
    found = {c for c in columns if c.startswith(fields.x) and c[len(fields.x) :].isdigit()}
    if found != wanted:
        missing = sorted(wanted - found, key=len)[:3]
        raise SourceError(
            f"the CSV header has {len(found)} sample columns {fields.x}0.., the model takes "
            f"{spec.size} ({fields.x}0..{fields.x}{spec.size - 1})"
            + (f"; missing e.g. {', '.join(missing)}" if missing else "")
        )
    if fields.device is None and fields.device_field not in columns:
        raise SourceError(f"the CSV header has no device column {fields.device_field!r}")


__all__ = [
    "NO_DEVICE",
    "REASONS",
    "Fields",
    "Record",
    "RecordKind",
    "Rejected",
    "Sample",
    "SampleSpec",
    "check_csv_header",
    "parse_record",
]
