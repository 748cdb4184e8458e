"""The fault catalog: each way to break a payload, registered with the error codes a decoder
must answer it with when it is the only fault (:data:`FAULTS`, filled by :func:`fault`).

A fault is a function drawing what it needs and changing a :class:`~.draft.Draft` in place; it
does nothing when an earlier fault left nothing for it to break.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from hypothesis import strategies as st

from tests.support.hostile.contract import SEQ_END, Model, limits_for
from tests.support.hostile.draft import LONG_LITERAL, MISSING, Draft

__all__ = ["FAULTS", "NODE_FAULTS", "Fault", "FaultFn", "fault"]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

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
    """Register the decorated function in :data:`FAULTS` with the codes it must produce."""

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


#: the faults a node can meet: every one but those needing a decoder argument a node never passes
NODE_FAULTS: Final = [f for f in FAULTS if not f.codec_only]
