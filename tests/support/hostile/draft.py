"""Payloads written by hand: a :class:`Draft` carries the arrays, the header fields and the
framing of a safetensors payload, each open to a fault, and writes the bytes at the end.

Seqs and times of a payload meant for a live node are :class:`NodeSeq` / :class:`NodeTime`:
relative to what the node has learned, resolved only when the payload is built.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np

from dataset_stream.protocol import Limits, encode_batch
from tests.support.hostile.contract import DIGITS, SEQ_END, Model, limits_for
from tests.support.times import T0

__all__ = [
    "LONG_LITERAL",
    "MISSING",
    "Draft",
    "NodeSeq",
    "NodeTime",
    "huge_integer_in_header",
]

MISSING: Final = object()  # a header field left out
#: a header value that Draft.header() replaces by an integer literal too long for Python's int
LONG_LITERAL: Final = "\x00an integer literal\x00"


@dataclass
class Draft:
    """A payload under construction: arrays, header fields and framing, each open to faults."""

    model: Model
    kind: str
    x: np.ndarray
    y: np.ndarray
    meta: Any  # a dict of strings unless a fault made it something else (or MISSING)
    order: str = "xy"  # order of the tensors' bytes in the data section
    key_order: tuple[str, ...] = ("__metadata__", "x", "y")
    indent: int | None = None
    ensure_ascii: bool = True
    entries: dict[str, Any] = field(default_factory=dict)
    pad: bytes = b""  # after the JSON text, inside the declared header
    pad_header_to: int | None = None  # pad with spaces up to this header length
    raw_header: bytes | None = None  # replaces the JSON header
    length_delta: int = 0  # added to the true header length in the prefix
    length: int | None = None  # replaces the header length in the prefix
    tail: bytes = b""  # appended after the data
    cut: int = 0  # bytes cut from the end of the data
    last_seq: int | None = None  # what the decoder is told was applied last
    payload_limit_short_by: int = 0  # decode with max_payload_bytes this far below the size
    shadowed: tuple[str, Any] | None = None  # a first copy of a header key, before the real one
    literal_digits: int = 0  # digits of the literal that replaces LONG_LITERAL
    faults: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.set_tensors(self.x, self.y)

    def set_tensors(self, x: np.ndarray, y: np.ndarray) -> None:
        """Carry ``x`` and ``y``, with header entries that describe them truthfully."""
        self.x, self.y = x, y
        sizes = {"x": x.nbytes, "y": y.nbytes}
        names = {"x": _wire_dtype(x.dtype), "y": _wire_dtype(y.dtype)}
        start = 0
        for name in self.order:
            shape = list((x if name == "x" else y).shape)
            span = [start, start + sizes[name]]
            self.entries[name] = {"dtype": names[name], "shape": shape, "data_offsets": span}
            start += sizes[name]

    def entry(self, name: str) -> dict[str, Any] | None:
        found = self.entries.get(name)
        return found if isinstance(found, dict) else None

    def shape(self, name: str) -> list[Any] | None:
        """The declared shape of tensor ``name``, if a fault left one that is a non-empty list."""
        entry = self.entry(name)
        shape = None if entry is None else entry.get("shape")
        return shape if isinstance(shape, list) and shape else None

    def data(self) -> bytes:
        parts = {"x": self.x.tobytes(), "y": self.y.tobytes()}
        data = b"".join(parts[name] for name in self.order) + self.tail
        return data[: len(data) - self.cut]

    def rendered_meta(self, last_seq: int | None) -> Any:
        """The metadata, with a seq and time relative to a node resolved against ``last_seq``."""
        if not isinstance(self.meta, dict):
            return self.meta
        meta, seq = dict(self.meta), None
        if isinstance(meta.get("seq"), NodeSeq):
            assert last_seq is not None, "a payload for a node needs the node's last seq"
            seq = meta["seq"].resolve(last_seq)
            meta["seq"] = str(seq)
        if isinstance(meta.get("t"), NodeTime):
            meta["t"] = meta["t"].resolve(seq)
        return meta

    def header(self, last_seq: int | None = None) -> bytes:
        if self.raw_header is not None:
            return self.raw_header
        meta = self.rendered_meta(last_seq)
        fields: dict[str, Any] = {"__metadata__": meta, **self.entries}
        order = [k for k in self.key_order if k in fields] + [
            k for k in fields if k not in self.key_order
        ]
        header = {k: fields[k] for k in order if fields[k] is not MISSING}
        raw = json.dumps(header, indent=self.indent, ensure_ascii=self.ensure_ascii).encode()
        if self.literal_digits:  # json.dumps cannot write it: Python cannot even str() it
            literal = b"7" * self.literal_digits
            raw = raw.replace(json.dumps(LONG_LITERAL).encode(), literal)
        if self.shadowed is not None:  # JSON allows a key twice; json.dumps never writes that
            key, value = self.shadowed
            raw = b"{" + json.dumps({key: value})[1:-1].encode() + b", " + raw[1:]
        if self.pad_header_to is not None:
            raw += b" " * max(0, self.pad_header_to - len(raw))
        return raw + self.pad

    def payload(self, last_seq: int | None = None) -> bytes:
        raw = self.header(last_seq)
        length = max(0, len(raw) + self.length_delta) if self.length is None else self.length
        return struct.pack("<Q", length) + raw + self.data()

    def limits(self, size: int) -> Limits:
        limits = limits_for(self.kind)
        if self.payload_limit_short_by:
            cap = max(1, size - self.payload_limit_short_by)
            limits = replace(limits, max_payload_bytes=cap)
        return limits

    def describe(self) -> str:
        n = self.x.shape[0] if self.x.ndim else 0
        seq = self.meta.get("seq") if isinstance(self.meta, dict) else None
        return f"{self.kind} N={n} seq={seq!r} faults={self.faults}"


def _wire_dtype(dtype: np.dtype[Any]) -> str:
    return {"uint8": "U8", "float32": "F32", "int64": "I64"}[dtype.name]


@dataclass(frozen=True, slots=True)
class NodeSeq:
    """A seq relative to a node that learned seqs 1..last, resolved when the payload is built.

    Hypothesis must draw the same way whatever state the node is in (or it reports a flaky
    strategy), so what depends on that state is only resolved after the draw.
    """

    where: str  # "next", "ahead" (by k), "learned" (the k-th modulo last), "zero", "max"
    k: int = 1

    def resolve(self, last: int) -> int:
        return {
            "next": last + 1,
            "ahead": last + 1 + self.k,
            "learned": 1 + self.k % last,
            "zero": 0,
            "max": SEQ_END - 1,
        }[self.where]


@dataclass(frozen=True, slots=True)
class NodeTime:
    """The stream's clock at the resolved seq, ``dt`` seconds off."""

    dt: float

    def resolve(self, seq: int | None) -> str:
        return repr(T0 + 60 * (seq or 0) + self.dt)


def huge_integer_in_header(digits: int = 5000) -> bytes:
    """A valid batch whose header also holds an integer literal of ``digits`` digits."""
    x = np.zeros((1, *DIGITS.sample_shape), np.uint8)
    payload = encode_batch(x, np.zeros(1, np.int64), seq=1, t=T0, source="s")
    (n,) = struct.unpack_from("<Q", payload)
    header = payload[8 : 8 + n].rstrip()
    raw = header[:-1] + b', "z": ' + b"7" * digits + b"}"
    return struct.pack("<Q", len(raw)) + raw + payload[8 + n :]
