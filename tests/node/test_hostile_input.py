"""Hostile input under hypothesis: the wire codec and a live node only ever answer.

**Codec.** ``decode_batch`` and ``decode_eval``, with the limits and the input of real models
(the default digits model, ``U8 [N, 1, 32, 32]`` and 10 classes; the sensor model,
``F32 [N, 3, 64]`` and 6 classes), are fed arbitrary bytes, safetensors files written here by
hand with faults drawn from the catalog ``FAULTS`` (each fault names the codes it must produce
when it is the only one), and mutations of valid payloads (bit flips, truncation, insertions,
deletions, appended bytes, a new length prefix). Every input either decodes into a value that
meets the contract (shapes, dtypes, label range, finite values, metadata) or raises
``ProtocolError`` with a code of ``ERROR_CODES``: no other exception, no example slower than
``DECODE_DEADLINE``, and no decode allocating more than a few times its payload (measured with
``tracemalloc``), so a declared huge shape is refused before anything is allocated for it.

**Node.** ``NodeHarness`` runs an embedded broker, a real ``Node`` (the default model, its own
state directory) and a peer ``aiomqtt`` client on an event loop in a background thread, started
once per test. The hypothesis test is a plain function that draws each input with ``st.data()``
-- relative to the seq the node has reached -- and talks to that loop through
``asyncio.run_coroutine_threadsafe``. Broker and node thus start once, not once per example,
keep running (and pinging) while hypothesis generates and shrinks, and each example finds the
node as the examples before it left it, as a device in the field would be. The answer an input
must get is derived from the codec, called with the node's own parameters, and the node's
delivery rules: learned (``telemetry``) when it decodes with the next seq, ``duplicate`` for a
seq learned before, ``stale_seq`` for seq 0 (never handled), otherwise an ``error`` with the
``ProtocolError``'s code and seq. The node runs with ``max_seq_ahead=1`` so that an early seq is
refused at once instead of held (holding is test_delivery.py's subject). A rejected input must
leave the node's SQLite files as they were, byte for byte. Then a valid batch with the next seq
must be learned; it also fences the input: a node handles and answers its batches in order, so a
second answer to the input would arrive before the fence's telemetry.

**Profiles** (tests/conftest.py): by default each property runs 100 examples (the whole file in
about 25 s on 2 cores, once the default model is built); ``VEGA_EMU_HYPOTHESIS=long pytest
tests/node/test_hostile_input.py`` runs 10,000 per property (about an hour, most of it the node
test).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import aiomqtt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from broker import EmbeddedBroker
from dataset_stream import Scenario
from dataset_stream.protocol import (
    ERROR_CODES,
    EVAL_LIMITS,
    RESERVED_KEYS,
    Batch,
    ErrorMessage,
    EvalSet,
    Limits,
    ProtocolError,
    Telemetry,
    decode_batch,
    decode_eval,
    encode_batch,
    encode_eval,
)
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.settings import DeliverySettings, NodeSettings

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
SEQ_END: Final = 10**18  # seqs are below this
T0: Final = 1_764_000_000.0
DEVICE: Final = "node-0099"
#: A decode of a payload of at most a few hundred KiB never takes this long, even on a busy CI.
DECODE_DEADLINE: Final = timedelta(seconds=2)
MISSING: Final = object()  # a header field left out
#: a header value that Draft.header() replaces by an integer literal too long for Python's int
LONG_LITERAL: Final = "\x00an integer literal\x00"


@dataclass(frozen=True, slots=True)
class Model:
    """What a receiving model accepts: ``x`` ``[N, *sample_shape]`` of ``dtype``, labels."""

    name: str
    sample_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    num_classes: int


DIGITS: Final = Model("digits", (1, 32, 32), np.dtype(np.uint8), 10)
SENSOR: Final = Model("sensor", (3, 64), np.dtype(np.float32), 6)
BATCH_LIMITS: Final = Limits()
CASES: Final = [
    pytest.param(model, kind, id=f"{model.name}-{kind}")
    for model in (DIGITS, SENSOR)
    for kind in ("batch", "eval")
]


def limits_for(kind: str) -> Limits:
    return BATCH_LIMITS if kind == "batch" else EVAL_LIMITS


# -- the decoder under watch ---------------------------------------------------------------------

Decoded = Batch | EvalSet | ProtocolError


def decode(
    payload: bytes,
    kind: str,
    model: Model,
    limits: Limits,
    last_seq: int | None = None,
) -> Decoded:
    """Decode like a node would; return the value or the ``ProtocolError``, let nothing else out.

    Asserts that the decode allocated at most a few times the payload (``tracemalloc`` sees
    Python and numpy allocations): what a header declares is never allocated before it is
    checked against the bytes that are really there.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    baseline, _ = tracemalloc.get_traced_memory()
    try:
        if kind == "batch":
            return decode_batch(
                payload,
                limits=limits,
                sample_shape=model.sample_shape,
                dtype=model.dtype,
                num_classes=model.num_classes,
                last_seq=last_seq,
            )
        return decode_eval(
            payload,
            limits=limits,
            sample_shape=model.sample_shape,
            dtype=model.dtype,
            num_classes=model.num_classes,
        )
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES, exc
        return exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        if started:
            tracemalloc.stop()
        budget = 8 * len(payload) + 8 * 2**20
        assert peak - baseline <= budget, f"decode allocated {peak - baseline} B > {budget} B"


def assert_contract(value: Decoded, kind: str, model: Model, limits: Limits) -> None:
    """A decoded value is what the contract promises the node; an error has a known code."""
    if isinstance(value, ProtocolError):
        assert value.code in ERROR_CODES
        assert value.seq is None or (kind == "batch" and 0 <= value.seq < SEQ_END)
        return
    assert isinstance(value, Batch if kind == "batch" else EvalSet)
    x, y = value.x, value.y
    assert x.dtype == model.dtype and x.shape[1:] == model.sample_shape
    assert 1 <= x.shape[0] <= limits.max_samples
    assert y.dtype == np.int64 and y.shape == (x.shape[0],)
    assert int(y.min()) >= 0 and int(y.max()) < model.num_classes
    if x.dtype.kind == "f":
        assert np.isfinite(x).all()
    assert isinstance(value.source, str) and value.source
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in value.meta.items())
    assert value.meta["v"] == "1"
    assert value.meta.get("kind", "batch") == kind
    if isinstance(value, Batch):
        assert type(value.seq) is int and 0 <= value.seq < SEQ_END
        assert isinstance(value.t, float) and math.isfinite(value.t)


# -- payloads written by hand --------------------------------------------------------------------


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


# -- the fault catalog ---------------------------------------------------------------------------

FaultFn = Callable[[st.DrawFn, Draft], None]


@dataclass(frozen=True, slots=True)
class Fault:
    """One way to break a payload, and the codes a decoder must answer it with when alone.

    ``seq_known``: the failure is found after the seq is read, so a batch's error carries it.
    """

    name: str
    codes: frozenset[str]
    apply: FaultFn
    seq_known: bool
    kinds: frozenset[str]
    float_only: bool
    codec_only: bool  # needs a decoder argument a node does not pass
    may_pass: bool  # the payload may also decode, then exactly as written

    def applies(self, model: Model, kind: str) -> bool:
        return kind in self.kinds and (not self.float_only or model.dtype.kind == "f")


FAULTS: list[Fault] = []


def fault(
    *codes: str,
    seq_known: bool,
    kinds: tuple[str, ...] = ("batch", "eval"),
    float_only: bool = False,
    codec_only: bool = False,
    may_pass: bool = False,
) -> Callable[[FaultFn], FaultFn]:
    def register(fn: FaultFn) -> FaultFn:
        FAULTS.append(
            Fault(
                fn.__name__,
                frozenset(codes),
                fn,
                seq_known,
                frozenset(kinds),
                float_only,
                codec_only,
                may_pass,
            )
        )
        return fn

    return register


def _set_meta(d: Draft, key: str, value: Any) -> None:
    if isinstance(d.meta, dict):
        d.meta[key] = value


@fault("bad_metadata", seq_known=False)
def metadata_key_missing(draw: st.DrawFn, d: Draft) -> None:
    keys = ["v", "seq", "source"] if d.kind == "batch" else ["v", "kind", "source"]
    if isinstance(d.meta, dict):
        d.meta.pop(draw(st.sampled_from(keys)), None)


@fault("bad_metadata", seq_known=False)
def metadata_not_a_map(draw: st.DrawFn, d: Draft) -> None:
    d.meta = draw(st.sampled_from([MISSING, None, [], ["v", "1"], "v=1", 1, True]))


@fault("bad_metadata", seq_known=False)
def metadata_value_not_a_string(draw: st.DrawFn, d: Draft) -> None:
    if isinstance(d.meta, dict):
        key = draw(st.sampled_from([*sorted(d.meta), "extra"]))
        d.meta[key] = draw(st.sampled_from([1, 1.5, None, True, [], {}, ["1"], {"v": "1"}]))


@fault("bad_metadata", seq_known=False)
def wire_version_wrong(draw: st.DrawFn, d: Draft) -> None:
    versions = ["2", "0", "", "1.0", " 1", "1 ", "01", "v1", "１", "1\x00", "+1"]
    _set_meta(d, "v", draw(st.sampled_from(versions)))


@fault("bad_metadata", seq_known=False)
def kind_wrong(draw: st.DrawFn, d: Draft) -> None:
    other = ["eval", "", "Batch", "batch "] if d.kind == "batch" else ["batch", "", "EVAL"]
    _set_meta(d, "kind", draw(st.sampled_from(other)))


@fault("bad_metadata", seq_known=False, kinds=("batch",))
def seq_malformed(draw: st.DrawFn, d: Draft) -> None:
    bad = ["-1", "+1", "01", "00", "1e3", "1.0", "", " 1", "1 ", "0x1", "٣", "1_0", "１"]
    bad += ["1" * 19, str(SEQ_END), "9" * 40, "-0", "1\n"]
    _set_meta(d, "seq", draw(st.sampled_from(bad)))


@fault("bad_metadata", seq_known=True, kinds=("batch",))
def t_malformed(draw: st.DrawFn, d: Draft) -> None:
    bad = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "-1e999", "", "abc"]
    bad += ["0x10", "1,5", "1" * 65, "1.0.0", "1e", "--1"]
    value = draw(st.sampled_from([MISSING, *bad]))
    if isinstance(d.meta, dict):
        d.meta.pop("t", None) if value is MISSING else d.meta.update(t=value)


@fault("bad_metadata", seq_known=False)
def source_empty(draw: st.DrawFn, d: Draft) -> None:
    _set_meta(d, "source", "")


@fault("bad_format", seq_known=True)
def metadata_not_unicode(draw: st.DrawFn, d: Draft) -> None:
    """A lone surrogate escape: valid JSON text, but no Unicode string (safetensors refuses)."""
    value = draw(st.sampled_from(["\ud800", "\udfff", "a\udc80b"]))
    d.ensure_ascii = True  # as escapes: raw, a lone surrogate cannot even be encoded
    _set_meta(d, draw(st.sampled_from(["source", "note"])), value)


@fault("stale_seq", seq_known=True, kinds=("batch",), codec_only=True)
def seq_already_applied(draw: st.DrawFn, d: Draft) -> None:
    if isinstance(d.meta, dict) and str(d.meta.get("seq", "")).isdigit():
        d.last_seq = int(d.meta["seq"]) + draw(st.integers(0, 3))


UNKNOWN_DTYPES: Final = ["F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U16", "U32", "U64"]
UNKNOWN_DTYPES.extend(["BOOL", "F8_E4M3", "F8_E5M2", "u8", "f32", "", "U8 ", "uint8", "float32"])


@fault("bad_dtype", seq_known=True)
def x_dtype_unknown(draw: st.DrawFn, d: Draft) -> None:
    if entry := d.entry("x"):
        entry["dtype"] = draw(st.sampled_from(UNKNOWN_DTYPES))


@fault("bad_dtype", seq_known=True)
def x_dtype_of_the_other_model(draw: st.DrawFn, d: Draft) -> None:
    """Consistent U8 data for a float model, or F32 data for an image model."""
    other = np.float32 if d.model.dtype == np.uint8 else np.uint8
    d.set_tensors(np.zeros(d.x.shape, other), d.y)


@fault("bad_dtype", seq_known=True)
def y_dtype_wrong(draw: st.DrawFn, d: Draft) -> None:
    if entry := d.entry("y"):
        dtypes = ["I32", "U64", "F64", "U8", "I8", "F32", "i64", "I64 ", "int64", "BOOL"]
        entry["dtype"] = draw(st.sampled_from(dtypes))


@fault("bad_format", seq_known=True)
def dtype_not_a_string(draw: st.DrawFn, d: Draft) -> None:
    if entry := d.entry(draw(st.sampled_from(["x", "y"]))):
        entry["dtype"] = draw(st.sampled_from([MISSING, None, 5, ["U8"], {"name": "U8"}, True]))
        if entry["dtype"] is MISSING:
            del entry["dtype"]


@fault("bad_format", seq_known=True)
def entry_not_an_object(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(["x", "y"]))
    d.entries[name] = draw(st.sampled_from(["U8", [], None, 0, [["U8", [1]]]]))


@fault("bad_format", seq_known=True)
def shape_not_a_list_of_sizes(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(["x", "y"]))
    entry = d.entry(name)
    if entry is None:
        return
    if draw(st.booleans()):
        entry["shape"] = draw(st.sampled_from([MISSING, None, "[1]", 5, {}, {"0": 1}]))
        if entry["shape"] is MISSING:
            del entry["shape"]
        return
    shape = list(d.shape(name) or [1])
    bad = [-1, INT64_MIN, 1.0, 2.5, True, "1", None, [1], 2**40, 2**64, 10**30]
    shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from(bad))
    entry["shape"] = shape


@fault("bad_shape", seq_known=True)
def sample_shape_wrong(draw: st.DrawFn, d: Draft) -> None:
    """Another sample shape, from off by one to declared dimensions of 2**39 each."""
    entry, shape = d.entry("x"), d.shape("x")
    if entry is None or shape is None:
        return
    sizes = st.integers(1, 64) | st.sampled_from([2**31, 2**32, 2**39, 2**40 - 1])
    other = draw(
        st.lists(sizes, min_size=1, max_size=5).filter(lambda s: tuple(s) != d.model.sample_shape)
    )
    entry["shape"] = [shape[0], *other]


@fault("bad_shape", seq_known=True)
def x_without_sample_dims(draw: st.DrawFn, d: Draft) -> None:
    if (entry := d.entry("x")) and (shape := d.shape("x")):
        entry["shape"] = shape[:1]


@fault("bad_shape", seq_known=True)
def no_samples(draw: st.DrawFn, d: Draft) -> None:
    if draw(st.booleans()):
        d.set_tensors(d.x[:0], d.y[:0])
    elif (entry := d.entry("x")) and (shape := d.shape("x")) and len(shape) > 1:
        shape = list(shape)  # a sample dimension of 0 (the data then do not match either)
        shape[draw(st.integers(1, len(shape) - 1))] = 0
        entry["shape"] = shape


@fault("bad_shape", seq_known=True)
def y_shape_wrong(draw: st.DrawFn, d: Draft) -> None:
    n = len(d.y)
    if entry := d.entry("y"):
        shapes = [[n + 1], [n + 1000], [n, 1], [1, n], [], [0], [n - 1] if n > 1 else [n + 2]]
        entry["shape"] = draw(st.sampled_from(shapes))


@fault("too_large", seq_known=True)
def too_many_samples(draw: st.DrawFn, d: Draft) -> None:
    """More samples than the limit, up to 2**40 - 1 (the data stay a few KiB)."""
    limit = limits_for(d.kind).max_samples
    n = draw(st.integers(limit + 1, 2**40 - 1) | st.just(limit + 1))
    x, y, shape = d.entry("x"), d.entry("y"), d.shape("x")
    if x is not None and y is not None and shape is not None:
        x["shape"] = [n, *shape[1:]]
        y["shape"] = [n]


OFFSET_LIES: Final = (
    *("overlap", "gap", "reversed", "past_end", "short", "negative", "float", "three"),
    *("missing", "not_a_list", "huge"),
)


@fault("bad_format", seq_known=True)
def offsets_lie(draw: st.DrawFn, d: Draft) -> None:
    first, second = d.entry(d.order[0]), d.entry(d.order[1])
    if first is None or second is None:
        return
    a, b = second["data_offsets"]
    how = draw(st.sampled_from(OFFSET_LIES))
    k = draw(st.integers(1, 8))
    if how == "overlap":
        second["data_offsets"] = [a - min(k, a), b]
    elif how == "gap":
        second["data_offsets"] = [a + k, b + k]
    elif how == "reversed":
        first["data_offsets"] = first["data_offsets"][::-1]
    elif how == "past_end":
        second["data_offsets"] = [a, b + k]
    elif how == "short":
        second["data_offsets"] = [a, b - min(k, b - a)]
    elif how == "negative":
        first["data_offsets"] = [-1, first["data_offsets"][1]]
    elif how == "float":
        second["data_offsets"] = [float(a), float(b)]
    elif how == "three":
        second["data_offsets"] = [a, b, b]
    elif how == "missing":
        del second["data_offsets"]
    elif how == "not_a_list":
        second["data_offsets"] = f"{a}:{b}"
    else:
        second["data_offsets"] = [a, 2**64 + b]


@fault("bad_format", "too_large", seq_known=False)
def header_length_lies(draw: st.DrawFn, d: Draft) -> None:
    if draw(st.booleans()):
        d.length_delta = draw(st.integers(-64, 64).filter(bool))
    else:
        max_header = limits_for(d.kind).max_header_bytes
        d.length = draw(st.sampled_from([2**63, 2**64 - 1, max_header + 1, 2**32]))


@fault("too_large", seq_known=False)
def header_over_the_limit(draw: st.DrawFn, d: Draft) -> None:
    d.pad_header_to = limits_for(d.kind).max_header_bytes + draw(st.integers(1, 64))


@fault("bad_format", seq_known=False)
def header_not_a_json_object(draw: st.DrawFn, d: Draft) -> None:
    d.raw_header = draw(
        st.sampled_from(
            [
                b"",
                b"{",
                b"}",
                b"[]",
                b"null",
                b'"x"',
                b"1",
                b"NaN",
                b"\xff\xfe{}",
                b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
                b"{}\x00",
                b'{"x": 1,}',
                b"{'x': 1}",
                b"[" * 20000 + b"]" * 20000,
                b'{"x":' * 10000 + b"1" + b"}" * 10000,
            ]
        )
    )


@fault("bad_format", seq_known=False)
def integer_literal_too_long(draw: st.DrawFn, d: Draft) -> None:
    """More digits than Python converts to an int (4300), as a metadata value or a size."""
    d.literal_digits = draw(st.integers(4301, 20000))
    if draw(st.booleans()):
        _set_meta(d, "note", LONG_LITERAL)
    elif entry := d.entry("y"):
        entry["shape"] = [LONG_LITERAL]


@fault("bad_format", seq_known=False)
def header_padding_not_spaces(draw: st.DrawFn, d: Draft) -> None:
    d.pad = draw(st.sampled_from([b"\x00", b"\x00" * 8, b"x", b"\x0b", b"\x0c", b"\xa0", b" ,"]))


@fault("bad_format", seq_known=False)
def extra_tensor(draw: st.DrawFn, d: Draft) -> None:
    name = draw(st.sampled_from(["z", "X", "x ", "", "__meta__", "y2"]))
    end = d.x.nbytes + d.y.nbytes
    d.entries[name] = {"dtype": "U8", "shape": [0], "data_offsets": [end, end]}


@fault("bad_format", seq_known=False)
def tensor_missing(draw: st.DrawFn, d: Draft) -> None:
    d.entries.pop(draw(st.sampled_from(["x", "y"])))


@fault("bad_format", seq_known=True, may_pass=True)
def key_given_twice(draw: st.DrawFn, d: Draft) -> None:
    """A hostile first copy of ``x``, ``y`` or the metadata: the last copy counts (for Python's
    json and for safetensors alike) or the payload is refused; the two never disagree."""
    key = draw(st.sampled_from(["x", "y", "__metadata__"]))
    first = {
        "x": {"dtype": "F64", "shape": [1, 2**39], "data_offsets": [0, 8]},
        "y": {"dtype": "I32", "shape": [2**39], "data_offsets": [0, 4]},
        "__metadata__": {"v": "2", "seq": "-1", "source": ""},
    }[key]
    d.shadowed = (key, first)


@fault("bad_format", seq_known=True)
def data_truncated(draw: st.DrawFn, d: Draft) -> None:
    d.cut = draw(st.integers(1, max(1, d.x.nbytes + d.y.nbytes)))


@fault("bad_format", seq_known=True)
def data_appended(draw: st.DrawFn, d: Draft) -> None:
    d.tail = draw(st.binary(min_size=1, max_size=64))


@fault("too_large", seq_known=False, codec_only=True)
def payload_over_the_limit(draw: st.DrawFn, d: Draft) -> None:
    d.payload_limit_short_by = draw(st.integers(1, 1000))


LABEL_EXTREMES: Final = [INT64_MIN, INT64_MIN + 1, -(2**31), -1]


@fault("bad_label", seq_known=True)
def label_negative(draw: st.DrawFn, d: Draft) -> None:
    if not len(d.y):
        return
    i = draw(st.integers(0, len(d.y) - 1))
    d.y[i] = draw(st.sampled_from(LABEL_EXTREMES) | st.integers(INT64_MIN, -1))


@fault("bad_label", seq_known=True)
def label_out_of_range(draw: st.DrawFn, d: Draft) -> None:
    if not len(d.y):
        return
    i = draw(st.integers(0, len(d.y) - 1))
    big = [d.model.num_classes, d.model.num_classes + 1, 2**31, 2**32, INT64_MAX]
    d.y[i] = draw(st.sampled_from(big) | st.integers(d.model.num_classes, INT64_MAX))


NON_FINITE_BITS: Final = [0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF, 0x7F800000, 0xFF800000]


@fault("non_finite", seq_known=True, float_only=True)
def x_not_finite(draw: st.DrawFn, d: Draft) -> None:
    """A NaN (quiet, signalling, negative) or an infinity somewhere in a float ``x``."""
    if d.x.dtype == np.float32 and d.x.size:
        bits = d.x.view(np.uint32).reshape(-1)
        bits[draw(st.integers(0, bits.size - 1))] = draw(st.sampled_from(NON_FINITE_BITS))


# -- strategies ----------------------------------------------------------------------------------

Strategy = st.SearchStrategy


def any_seq() -> Strategy[int]:
    return st.integers(0, SEQ_END - 1) | st.sampled_from([0, 1, SEQ_END - 1])


def any_t(seq: int) -> Strategy[str]:
    """Any finite time, written as a producer might write it."""
    value = st.floats(allow_nan=False, allow_infinity=False) | st.just(T0 + 60 * seq)
    style = st.sampled_from([repr, lambda v: format(v, ".17g"), lambda v: format(v, ".6e")])
    return st.builds(lambda v, f: f(v), value, style).filter(lambda s: math.isfinite(float(s)))


@st.composite
def drafts(
    draw: st.DrawFn,
    model: Model,
    kind: str,
    *,
    seqs: Strategy[Any] | None = None,
    times: Callable[[Any], Strategy[Any]] = any_t,
    faults: list[Fault] | None = None,
    max_faults: int = 3,
) -> Draft:
    """A payload for ``model``, valid but for 0 to ``max_faults`` faults of ``faults``."""
    n = draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n, *model.sample_shape)
    if model.dtype == np.uint8:
        x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        scale = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]))
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        for _ in range(draw(st.integers(0, 3))):  # the edges of the finite range
            edge = draw(st.sampled_from([3.4028235e38, -3.4028235e38, 1e-45, -0.0, 0.0]))
            x.reshape(-1)[draw(st.integers(0, x.size - 1))] = edge
    labels = st.integers(0, model.num_classes - 1)
    y = np.array(draw(st.lists(labels, min_size=n, max_size=n)), dtype=np.int64)
    text = st.text(max_size=24)
    extra = draw(
        st.dictionaries(st.text(max_size=12).filter(lambda k: k not in RESERVED_KEYS), text)
    )
    meta: dict[str, Any] = {"v": "1", "source": draw(st.text(min_size=1, max_size=24)), **extra}
    if kind == "batch":
        seq = draw(any_seq() if seqs is None else seqs)
        meta |= {"seq": seq if isinstance(seq, NodeSeq) else str(seq), "t": draw(times(seq))}
        if draw(st.booleans()):
            meta["kind"] = "batch"
    else:
        meta["kind"] = "eval"
    draft = Draft(
        model,
        kind,
        x,
        y,
        meta,
        order=draw(st.sampled_from(["xy", "yx"])),
        key_order=tuple(draw(st.permutations(["__metadata__", "x", "y"]))),
        indent=draw(st.sampled_from([None, None, 0, 2])),
        ensure_ascii=draw(st.booleans()),
        pad=draw(st.sampled_from([b"", b"", b" ", b" " * 7])),  # the format pads with spaces
    )
    catalog = [f for f in (FAULTS if faults is None else faults) if f.applies(model, kind)]
    for chosen in draw(st.lists(st.sampled_from(catalog), max_size=max_faults, unique=True)):
        chosen.apply(draw, draft)
        draft.faults.append(chosen.name)
    return draft


@st.composite
def valid_payloads(draw: st.DrawFn, model: Model, kind: str) -> bytes:
    """A valid payload, written by ``encode_batch``/``encode_eval`` or by hand."""
    draft = draw(drafts(model, kind, max_faults=0))
    if draw(st.booleans()):
        return draft.payload()
    extra = {k: v for k, v in draft.meta.items() if k not in RESERVED_KEYS}
    if kind == "eval":
        return encode_eval(draft.x, draft.y, source=draft.meta["source"], extra=extra)
    seq, t = int(draft.meta["seq"]), float(draft.meta["t"])
    return encode_batch(draft.x, draft.y, seq=seq, t=t, source=draft.meta["source"], extra=extra)


EDIT_OPS: Final = ("flip", "flip_head", "truncate", "append", "insert", "delete", "length")
#: (operation, where, a number, some bytes): where and number are taken modulo what fits, so a
#: list of edits is drawn the same way whatever the payload it is applied to
Edit = tuple[str, int, int, bytes]


def edits() -> Strategy[list[Edit]]:
    """1 to 4 edits: bit flips (``flip_head``: in the header), cuts, insertions, a new prefix."""
    edit = st.tuples(
        st.sampled_from(EDIT_OPS),
        st.integers(0, 2**24),
        st.integers(0, 2**64 - 1),
        st.binary(min_size=1, max_size=64),
    )
    return st.lists(edit, min_size=1, max_size=4)


def apply_edits(base: bytes, todo: list[Edit]) -> bytes:
    out = bytearray(base)
    (header_len,) = struct.unpack_from("<Q", base)
    for op, at, number, blob in todo:
        size = len(out)
        if op in ("flip", "flip_head") and size:
            end = min(size, 8 + header_len + 16) if op == "flip_head" else size
            out[at % end] ^= 1 << (number % 8)
        elif op == "truncate":
            del out[at % (size + 1) :]
        elif op == "append":
            out += blob
        elif op == "insert":
            i = at % (size + 1)
            out[i:i] = blob[:16]
        elif op == "delete" and size:
            i = at % size
            del out[i : i + 1 + number % 16]
        elif op == "length" and size >= 8:
            out[:8] = struct.pack("<Q", number)
    return bytes(out)


# -- codec properties ----------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "kind"), CASES)
@settings(deadline=DECODE_DEADLINE)
@given(data=st.data())
def test_encode_then_decode_gives_back_arrays_and_metadata(
    model: Model, kind: str, data: st.DataObject
) -> None:
    draft = data.draw(drafts(model, kind, max_faults=0))
    meta = draft.meta
    extra = {k: v for k, v in meta.items() if k not in RESERVED_KEYS}
    if kind == "batch":
        seq, t = int(meta["seq"]), float(meta["t"])
        payload = encode_batch(draft.x, draft.y, seq=seq, t=t, source=meta["source"], extra=extra)
    else:
        payload = encode_eval(draft.x, draft.y, source=meta["source"], extra=extra)
    value = decode(payload, kind, model, limits_for(kind))
    assert not isinstance(value, ProtocolError), value
    assert_contract(value, kind, model, limits_for(kind))
    assert value.x.tobytes() == draft.x.tobytes() and value.x.shape == draft.x.shape
    np.testing.assert_array_equal(value.y, draft.y)
    assert value.source == meta["source"] and {k: value.meta[k] for k in extra} == extra
    assert value.meta["kind"] == kind and value.meta["v"] == "1"
    if isinstance(value, Batch):
        assert (value.seq, value.t) == (seq, t)


@pytest.mark.parametrize(("model", "kind"), CASES)
@settings(deadline=DECODE_DEADLINE)
@given(data=st.data())
def test_a_crafted_payload_decodes_as_written_or_fails_with_its_fault_code(
    model: Model, kind: str, data: st.DataObject
) -> None:
    draft = data.draw(drafts(model, kind), label="draft")
    payload = draft.payload()
    limits = draft.limits(len(payload))
    value = decode(payload, kind, model, limits, last_seq=draft.last_seq)
    assert_contract(value, kind, model, limits)
    only = [f for f in FAULTS if f.name in draft.faults]
    if not draft.faults or (
        len(only) == 1 and only[0].may_pass and not isinstance(value, ProtocolError)
    ):  # exactly what was written comes back
        assert not isinstance(value, ProtocolError), value
        assert value.x.tobytes() == draft.x.tobytes() and value.x.shape == draft.x.shape
        np.testing.assert_array_equal(value.y, draft.y)
        assert dict(value.meta) == draft.meta and value.source == draft.meta["source"]
        if isinstance(value, Batch):
            assert (value.seq, value.t) == (int(draft.meta["seq"]), float(draft.meta["t"]))
        return
    if isinstance(value, ProtocolError) and value.seq is not None:  # only the payload's own
        assert isinstance(draft.meta, dict) and value.seq == int(draft.meta["seq"])
    if len(only) == 1:  # several faults may cancel out (a cut that undoes a tail)
        (fault,) = only
        assert isinstance(value, ProtocolError), f"{draft.describe()} was accepted"
        assert value.code in fault.codes, f"{fault.name}: {value}"
        assert (value.seq is not None) == (fault.seq_known and kind == "batch"), value


@pytest.mark.parametrize(("model", "kind"), CASES)
@settings(deadline=DECODE_DEADLINE)
@given(data=st.data())
def test_a_mutated_payload_decodes_within_the_contract_or_fails_cleanly(
    model: Model, kind: str, data: st.DataObject
) -> None:
    base = data.draw(valid_payloads(model, kind), label="base")
    payload = apply_edits(base, data.draw(edits(), label="edits"))
    value = decode(payload, kind, model, limits_for(kind))
    assert_contract(value, kind, model, limits_for(kind))


@pytest.mark.parametrize("kind", ["batch", "eval"])
@settings(deadline=DECODE_DEADLINE)
@given(
    payload=st.binary(max_size=2048)
    | st.builds(lambda body: struct.pack("<Q", len(body)) + body, st.binary(max_size=512))
    | st.builds(
        lambda n, body: struct.pack("<Q", n) + body,
        st.integers(0, 2**64 - 1),
        st.binary(max_size=256),
    )
)
def test_arbitrary_bytes_fail_cleanly(kind: str, payload: bytes) -> None:
    for model in (DIGITS, SENSOR):
        value = decode(payload, kind, model, limits_for(kind))
        assert_contract(value, kind, model, limits_for(kind))


def huge_integer_in_header(digits: int = 5000) -> bytes:
    """A valid batch whose header also holds an integer literal of ``digits`` digits."""
    x = np.zeros((1, *DIGITS.sample_shape), np.uint8)
    payload = encode_batch(x, np.zeros(1, np.int64), seq=1, t=T0, source="s")
    (n,) = struct.unpack_from("<Q", payload)
    header = payload[8 : 8 + n].rstrip()
    raw = header[:-1] + b', "z": ' + b"7" * digits + b"}"
    return struct.pack("<Q", len(raw)) + raw + payload[8 + n :]


def test_an_integer_literal_too_long_for_python_is_bad_format() -> None:
    # found by this file: json.loads raised a plain ValueError (Python's int max_str_digits)
    value = decode(huge_integer_in_header(), "batch", DIGITS, BATCH_LIMITS)
    assert isinstance(value, ProtocolError) and value.code == "bad_format"


# -- a live node ---------------------------------------------------------------------------------

Answer = Telemetry | ErrorMessage
ANSWER_TIMEOUT_S: Final = 30.0
FENCE_SAMPLES: Final = 16


def db_fingerprint(state_dir: Path, device: str) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(state_dir.glob(f"{device}.db*"))
    }


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the test may see of the node, read on the node's loop."""

    last_seq: int
    events: int
    connections: int
    failures: int
    connected: bool


class NodeHarness:
    """Broker, node and peer client on an event loop in a background thread (a context manager).

    ``send`` publishes one payload to the node's batch topic and returns the next answer the
    peer receives on the node's ``telemetry`` or ``error`` topic.
    """

    def __init__(self, bundle: ModelBundle, scenario: Scenario, state_dir: Path) -> None:
        self.bundle = bundle
        self.events = scenario.events(DEVICE)
        self.state_dir = state_dir
        self.settings = NodeSettings(DEVICE, state_dir, delivery=DeliverySettings(max_seq_ahead=1))
        self._thread = threading.Thread(target=self._run, name="hostile-input node", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: aiomqtt.Client | None = None
        self._node: Node | None = None

    def __enter__(self) -> NodeHarness:
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("broker and node did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the node's loop did not stop"
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the test thread by __enter__ / __exit__
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with (
            EmbeddedBroker(port=0) as broker,
            aiomqtt.Client(**broker.url.client_kwargs()) as client,
        ):
            await client.subscribe(f"vega/{DEVICE}/telemetry", qos=1)
            await client.subscribe(f"vega/{DEVICE}/error", qos=1)
            async with Node(self.settings, self.bundle, broker.url) as node:
                async with asyncio.timeout(10):
                    await node.connected.wait()
                self._client, self._node = client, node
                self._ready.set()
                await self._stop.wait()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(ANSWER_TIMEOUT_S + 5)

    def send(self, payload: bytes) -> Answer:
        return self._call(self._send(payload))  # type: ignore[no-any-return]

    async def _send(self, payload: bytes) -> Answer:
        assert self._client is not None
        await self._client.publish(f"vega/{DEVICE}/batch", payload, qos=1)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            message = await anext(self._client.messages)
        assert isinstance(message.payload, bytes)
        if message.topic.value.endswith("/telemetry"):
            return Telemetry.from_json(message.payload)
        return ErrorMessage.from_json(message.payload)

    def view(self) -> NodeView:
        return self._call(self._view())  # type: ignore[no-any-return]

    async def _view(self) -> NodeView:
        node = self._node
        assert node is not None and node.engine is not None
        last = node.engine.last_seq
        return NodeView(
            last_seq=0 if last is None else last,
            events=node.engine.state.events_applied,
            connections=node.connections,
            failures=node.failures,
            connected=node.connected.is_set(),
        )

    def learn_next(self) -> Telemetry:
        """Send a valid batch with the next seq; it must be the next answer, and be learned."""
        before = self.view()
        seq = before.last_seq + 1
        event = self.events[seq % len(self.events)]
        x, y = event.x[:FENCE_SAMPLES], event.y[:FENCE_SAMPLES]
        answer = self.send(encode_batch(x, y, seq=seq, t=T0 + 60 * seq, source="fence"))
        assert isinstance(answer, Telemetry) and answer.seq == seq, answer
        learned = answer.state != "depleted"  # an empty battery is not the input's fault
        assert answer.events == before.events + learned and answer.device == DEVICE
        after = self.view()
        assert after.connected and after.connections == 1 and after.failures == 0, after
        return answer

    def expected(self, payload: bytes, last_seq: int) -> tuple[str, int | None]:
        """The answer the node owes ``payload``: ``telemetry`` or an error code, and the seq."""
        try:
            batch = decode_batch(
                payload,
                limits=self.settings.limits,
                sample_shape=self.bundle.input_shape,
                dtype=self.bundle.input_dtype,
                num_classes=self.bundle.num_classes,
            )
        except ProtocolError as exc:
            return exc.code, exc.seq
        if batch.seq == 0:  # below the first seq: never handled, so not a duplicate
            return "stale_seq", 0
        if batch.seq <= last_seq:  # every seq up to last_seq was learned: no gaps here
            return "duplicate", batch.seq
        if batch.seq > last_seq + 1:  # max_seq_ahead=1
            return "bad_metadata", batch.seq
        return "telemetry", batch.seq


@dataclass(frozen=True, slots=True)
class Hostile:
    """One input for the node: what it is, and how to build it for a node at ``last_seq``."""

    what: str
    build: Callable[[int], bytes] = field(repr=False)


NODE_FAULTS: Final = [f for f in FAULTS if not f.codec_only]


def node_inputs() -> Strategy[Hostile]:
    """Inputs for a node: crafted, mutated or plain bytes, with seqs relative to the node's."""
    seqs = st.sampled_from([NodeSeq("next")] * 6 + [NodeSeq("zero"), NodeSeq("max")]) | st.builds(
        NodeSeq, st.sampled_from(["ahead", "learned"]), st.integers(1, 10**6)
    )

    def times(seq: object) -> Strategy[Any]:
        # within about 30 years of the stream's clock: enough to move the node's time both ways,
        # too little to drain its battery (a far-future t would: that is the energy model)
        return st.builds(NodeTime, st.floats(-1e9, 1e9))

    crafted = drafts(DIGITS, "batch", seqs=seqs, times=times, faults=NODE_FAULTS)
    valid = drafts(DIGITS, "batch", seqs=st.just(NodeSeq("next")), times=times, max_faults=0)
    return st.one_of(
        crafted.map(lambda d: Hostile(d.describe(), d.payload)),
        st.builds(
            lambda d, todo: Hostile(
                f"{todo} applied to a valid batch", lambda last: apply_edits(d.payload(last), todo)
            ),
            valid,
            edits(),
        ),
        st.binary(max_size=512).map(lambda p: Hostile("bytes", lambda _: p)),
    )


@pytest.fixture
def node_harness(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> Iterator[NodeHarness]:
    assert (default_bundle.input_shape, default_bundle.input_dtype) == (
        DIGITS.sample_shape,
        DIGITS.dtype,
    )
    assert default_bundle.num_classes == DIGITS.num_classes
    with NodeHarness(default_bundle, digits_nic, tmp_path / "state") as harness:
        harness.learn_next()  # seq 1: the node has state worth protecting
        yield harness


def test_a_node_answers_each_hostile_batch_once_and_keeps_learning(
    node_harness: NodeHarness,
) -> None:
    harness = node_harness
    state_dir = harness.state_dir

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def answers_once(data: st.DataObject) -> None:
        hostile = data.draw(node_inputs(), label="input")
        view = harness.view()
        payload = hostile.build(view.last_seq)
        note(f"the node had learned seqs 1..{view.last_seq}; payload: {payload[:400]!r}")
        code, seq = harness.expected(payload, view.last_seq)
        before = db_fingerprint(state_dir, DEVICE)
        answer = harness.send(payload)
        if code == "telemetry":
            assert isinstance(answer, Telemetry), answer
            assert answer.seq == seq and answer.device == DEVICE
        else:
            assert isinstance(answer, ErrorMessage), answer
            assert (answer.code, answer.seq, answer.device) == (code, seq, DEVICE), answer
            assert answer.code in ERROR_CODES | {"duplicate"} and answer.message
            after = db_fingerprint(state_dir, DEVICE)
            if code in ("duplicate", "stale_seq"):
                # the node read its event log: SQLite records readers in the shared-memory
                # index (-shm), which holds no state; the database and its WAL are untouched
                before.pop(f"{DEVICE}.db-shm", None)
                after.pop(f"{DEVICE}.db-shm", None)
            assert after == before, "a rejected input changed the node's state files"
        harness.learn_next()  # still serving; and no second answer to the input came first

    answers_once()
