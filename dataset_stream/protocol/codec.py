"""Wire codec v1: learning batches, eval sets and inference requests as safetensors bytes.

A payload is a plain safetensors file holding a few named tensors and a string map of metadata:

- ``x``: ``[N, *sample_shape]``, ``uint8`` (images) or ``float32`` (sensor windows);
- ``y``: ``[N]`` ``int64`` class labels (batch and eval; an inference request has none);
- ``ids``: optional, ``[N]`` ``int64`` sample identities, distinct and >= 0 (batch and infer):
  a labelled sample that was predicted before carries the id it had in the inference request,
  so the node can score its prediction (prequential accuracy);
- metadata: ``v`` = ``"1"``, ``kind`` = ``"batch"``, ``"eval"`` or ``"infer"``, ``source``; a
  batch and an inference request also have ``seq`` (decimal integer; batches and inference
  requests are two independent sequences) and ``t`` (simulated unix seconds of capture).
  Other keys are free for producers (``extra``) and are returned in ``meta``.

Decoding never trusts the payload: the size is checked before anything is parsed, the header is
read and checked by hand before safetensors sees the bytes, and every failure becomes a
:class:`ProtocolError` with a stable ``code``.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from dataset_stream.errors import ProtocolError

WIRE_VERSION: Final = "1"
RESERVED_KEYS: Final = frozenset({"v", "kind", "seq", "t", "source"})
MiB: Final = 1024 * 1024

_DTYPES: Final = {"U8": np.dtype(np.uint8), "F32": np.dtype(np.float32), "I64": np.dtype(np.int64)}
_X_DTYPES: Final = ("U8", "F32")
_SEQ_RE: Final = re.compile(r"0|[1-9][0-9]{0,17}")
#: Tensors of each payload kind: (required, optional).
_TENSORS: Final = {
    "batch": (frozenset({"x", "y"}), frozenset({"ids"})),
    "eval": (frozenset({"x", "y"}), frozenset()),
    "infer": (frozenset({"x"}), frozenset({"ids"})),
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds a decoder enforces before and while parsing a payload."""

    max_payload_bytes: int = 16 * MiB
    max_samples: int = 4096
    max_header_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("max_payload_bytes", "max_samples", "max_header_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, not {value!r}")


#: Limits for eval sets: one per device, published once, so larger than a learning batch.
EVAL_LIMITS: Final = Limits(max_payload_bytes=256 * MiB, max_samples=65536)


@dataclass(frozen=True, slots=True, eq=False)
class Batch:
    """One decoded learning event: ``x`` ``[N, *sample_shape]``, ``y`` ``[N]`` int64;
    ``ids`` ``[N]`` int64 (distinct, >= 0) when the producer named its samples."""

    x: np.ndarray
    y: np.ndarray
    seq: int
    t: float
    source: str
    meta: Mapping[str, str] = field(default_factory=dict)
    ids: np.ndarray | None = None


@dataclass(frozen=True, slots=True, eq=False)
class InferRequest:
    """Samples to classify: ``x`` ``[N, *sample_shape]``, no labels; ``ids`` ``[N]`` int64 or
    None. ``seq`` numbers the device's inference requests (not its batches)."""

    x: np.ndarray
    seq: int
    t: float
    source: str
    meta: Mapping[str, str] = field(default_factory=dict)
    ids: np.ndarray | None = None


@dataclass(frozen=True, slots=True, eq=False)
class EvalSet:
    """A decoded held-out test set: ``x`` ``[N, *sample_shape]``, ``y`` ``[N]`` int64."""

    x: np.ndarray
    y: np.ndarray
    source: str
    meta: Mapping[str, str] = field(default_factory=dict)


def encode_batch(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seq: int,
    t: float,
    source: str,
    ids: np.ndarray | None = None,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """Encode one learning event. Bad arguments raise :class:`ProtocolError` (a ``ValueError``)."""
    fields = _seq_and_t(seq, t)
    return _encode(x, y, ids, kind="batch", source=source, extra=extra, fields=fields)


def encode_infer(
    x: np.ndarray,
    *,
    seq: int,
    t: float,
    source: str,
    ids: np.ndarray | None = None,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """Encode an inference request (metadata ``kind`` = ``"infer"``): ``x`` and optional ``ids``."""
    fields = _seq_and_t(seq, t)
    return _encode(x, None, ids, kind="infer", source=source, extra=extra, fields=fields)


def encode_eval(
    x: np.ndarray, y: np.ndarray, *, source: str, extra: Mapping[str, str] | None = None
) -> bytes:
    """Encode a held-out eval set (metadata ``kind`` = ``"eval"``, no ``seq``)."""
    return _encode(x, y, None, kind="eval", source=source, extra=extra, fields={})


def decode_batch(
    payload: bytes,
    *,
    limits: Limits = Limits(),
    sample_shape: tuple[int, ...] | None = None,
    dtype: np.dtype[Any] | str | None = None,
    num_classes: int | None = None,
    last_seq: int | None = None,
) -> Batch:
    """Decode and validate a learning batch; every failure is a :class:`ProtocolError`.

    ``sample_shape``, ``dtype`` and ``num_classes`` pin what the receiving model accepts;
    ``last_seq`` is the last sequence number already applied: ``seq <= last_seq`` raises
    ``stale_seq`` (with ``.seq`` set) so the node can acknowledge the duplicate and skip it.
    """
    header, meta = _read_header(payload, limits, kind="batch")
    seq = _parse_seq(meta)
    try:
        t = _parse_t(meta)
        if last_seq is not None and seq <= last_seq:
            raise ProtocolError("stale_seq", f"seq {seq} was already applied (last {last_seq})")
        x, y, ids = _read_tensors(payload, header, limits, sample_shape, dtype, num_classes)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.message, seq=seq) from None
    assert y is not None
    return Batch(x=x, y=y, seq=seq, t=t, source=meta["source"], meta=meta, ids=ids)


def decode_infer(
    payload: bytes,
    *,
    limits: Limits = Limits(),
    sample_shape: tuple[int, ...] | None = None,
    dtype: np.dtype[Any] | str | None = None,
) -> InferRequest:
    """Decode and validate an inference request; every failure is a :class:`ProtocolError`.

    The same checks as a batch's (size, dtype, shape, finite values), without labels. There is
    no ``last_seq``: a request seen before is answered again (the node decides what that costs).
    Once the seq is read, a failure carries it in ``.seq``.
    """
    header, meta = _read_header(payload, limits, kind="infer")
    seq = _parse_seq(meta)
    try:
        t = _parse_t(meta)
        x, _, ids = _read_tensors(payload, header, limits, sample_shape, dtype, None)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.message, seq=seq) from None
    return InferRequest(x=x, seq=seq, t=t, source=meta["source"], meta=meta, ids=ids)


def decode_eval(
    payload: bytes,
    *,
    limits: Limits = EVAL_LIMITS,
    sample_shape: tuple[int, ...] | None = None,
    dtype: np.dtype[Any] | str | None = None,
    num_classes: int | None = None,
) -> EvalSet:
    """Decode and validate an eval set; every failure is a :class:`ProtocolError`."""
    header, meta = _read_header(payload, limits, kind="eval")
    x, y, _ = _read_tensors(payload, header, limits, sample_shape, dtype, num_classes)
    assert y is not None
    return EvalSet(x=x, y=y, source=meta["source"], meta=meta)


# -- encoding ------------------------------------------------------------------------------------


def _seq_and_t(seq: int, t: float) -> dict[str, str]:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 10**18:
        raise ProtocolError("bad_metadata", f"seq must be an int in 0..10**18-1, not {seq!r}")
    if not math.isfinite(t):
        raise ProtocolError("bad_metadata", f"t must be finite, not {t!r}")
    return {"seq": str(seq), "t": repr(float(t))}


def _encode(
    x: np.ndarray,
    y: np.ndarray | None,
    ids: np.ndarray | None,
    *,
    kind: str,
    source: str,
    extra: Mapping[str, str] | None,
    fields: dict[str, str],
) -> bytes:
    if not isinstance(source, str) or not source:
        raise ProtocolError("bad_metadata", f"source must be a non-empty str, not {source!r}")
    x = np.asarray(x)
    if x.dtype not in (_DTYPES["U8"], _DTYPES["F32"]):
        raise ProtocolError("bad_dtype", f"x must be uint8 or float32, not {x.dtype}")
    tensors = {"x": np.ascontiguousarray(x)}
    if y is not None:
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise ProtocolError("bad_dtype", f"y must hold integers, not {y.dtype}")
        _check_shapes(tuple(x.shape), tuple(y.shape))
        if y.size and (int(y.min()) < 0 or int(y.max()) > np.iinfo(np.int64).max):
            raise ProtocolError("bad_label", "labels must be non-negative int64 values")
        tensors["y"] = np.ascontiguousarray(y, dtype=np.int64)
    else:
        _check_shapes(tuple(x.shape), None)
    if ids is not None:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu" or (ids.size and int(ids.max()) > np.iinfo(np.int64).max):
            raise ProtocolError("bad_dtype", f"ids must hold int64 values, not {ids.dtype}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        _check_ids(ids, len(x))
        tensors["ids"] = ids
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ProtocolError("non_finite", "x holds NaN or infinite values")
    metadata = {"v": WIRE_VERSION, "kind": kind, "source": source, **fields}
    for key, value in (extra or {}).items():
        if key in RESERVED_KEYS or not isinstance(key, str) or not isinstance(value, str):
            raise ProtocolError("bad_metadata", f"extra metadata {key!r}: {value!r} not allowed")
        metadata[key] = value
    return safetensors.numpy.save(tensors, metadata=metadata)


# -- decoding ------------------------------------------------------------------------------------


def _read_header(
    payload: bytes, limits: Limits, *, kind: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check size and header structure; return (tensor entries, metadata)."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ProtocolError("bad_format", f"payload must be bytes, not {type(payload).__name__}")
    size = len(payload)
    if size > limits.max_payload_bytes:
        raise ProtocolError("too_large", f"payload of {size} bytes > {limits.max_payload_bytes}")
    if size < 8:
        raise ProtocolError("bad_format", f"payload of {size} bytes has no safetensors header")
    (header_len,) = struct.unpack_from("<Q", payload, 0)
    if header_len > limits.max_header_bytes:
        raise ProtocolError(
            "too_large", f"header of {header_len} bytes > {limits.max_header_bytes}"
        )
    if 8 + header_len > size:
        raise ProtocolError("bad_format", f"header of {header_len} bytes is truncated")
    try:
        header = json.loads(bytes(payload[8 : 8 + header_len]).decode("utf-8"))
    # ValueError: also an integer literal longer than Python converts (int max_str_digits)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("bad_format", f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_format", "header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise ProtocolError("bad_metadata", "metadata must be a map of strings")
    if meta.get("v") != WIRE_VERSION:
        raise ProtocolError("bad_metadata", f"wire version v={meta.get('v')!r}, expected '1'")
    found = meta.get("kind", "batch")  # producers of batches may omit it
    if found != kind:
        raise ProtocolError("bad_metadata", f"payload kind {found!r}, expected {kind!r}")
    if not meta.get("source"):
        raise ProtocolError("bad_metadata", "metadata has no source")
    required, optional = _TENSORS[kind]
    if not required <= set(header) <= required | optional:
        allowed = " and ".join(sorted(required)) + "".join(f" (+ {o})" for o in sorted(optional))
        raise ProtocolError("bad_format", f"{kind} tensors must be {allowed}, not {sorted(header)}")
    return header, meta


def _parse_seq(meta: Mapping[str, str]) -> int:
    raw = meta.get("seq")
    if raw is None or not _SEQ_RE.fullmatch(raw):
        raise ProtocolError("bad_metadata", f"seq must be a decimal integer, not {raw!r}")
    return int(raw)


def _parse_t(meta: Mapping[str, str]) -> float:
    raw = meta.get("t")
    try:
        t = float(raw) if raw is not None and len(raw) <= 64 else math.nan
    except ValueError:
        t = math.nan
    if not math.isfinite(t):
        raise ProtocolError("bad_metadata", f"t must be a finite number, not {raw!r}")
    return t


def _entry(header: Mapping[str, Any], name: str) -> tuple[str, tuple[int, ...]]:
    entry = header[name]
    if not isinstance(entry, dict):
        raise ProtocolError("bad_format", f"tensor {name} has no description")
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**40 for d in shape):
        raise ProtocolError("bad_format", f"tensor {name} has an invalid shape {shape!r}")
    if not isinstance(dtype, str):
        raise ProtocolError("bad_format", f"tensor {name} has no dtype")
    return dtype, tuple(shape)


def _check_shapes(x_shape: tuple[int, ...], y_shape: tuple[int, ...] | None) -> None:
    if len(x_shape) < 2:
        raise ProtocolError("bad_shape", f"x must be [N, *sample_shape], not {list(x_shape)}")
    if y_shape is not None and (len(y_shape) != 1 or y_shape[0] != x_shape[0]):
        raise ProtocolError("bad_shape", f"y must be [{x_shape[0]}], not {list(y_shape)}")
    if x_shape[0] == 0 or 0 in x_shape[1:]:
        raise ProtocolError("bad_shape", f"x {list(x_shape)} holds no samples")


def _check_ids(ids: np.ndarray, n: int) -> None:
    if ids.shape != (n,):
        raise ProtocolError("bad_shape", f"ids must be [{n}], not {list(ids.shape)}")
    if n and int(ids.min()) < 0:
        raise ProtocolError("bad_metadata", f"sample id {int(ids.min())} is negative")
    if len(np.unique(ids)) != n:
        raise ProtocolError("bad_metadata", "sample ids must be distinct within a payload")


def _read_tensors(
    payload: bytes,
    header: Mapping[str, Any],
    limits: Limits,
    sample_shape: tuple[int, ...] | None,
    dtype: np.dtype[Any] | str | None,
    num_classes: int | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(x, y, ids)``; ``y`` and ``ids`` are None when the payload has no such tensor."""
    x_dtype, x_shape = _entry(header, "x")
    if x_dtype not in _X_DTYPES:
        raise ProtocolError("bad_dtype", f"x dtype {x_dtype!r} is not U8 or F32")
    if dtype is not None and _DTYPES[x_dtype] != np.dtype(dtype):
        raise ProtocolError("bad_dtype", f"x is {_DTYPES[x_dtype]}, expected {np.dtype(dtype)}")
    y_shape = None
    if "y" in header:
        y_dtype, y_shape = _entry(header, "y")
        if y_dtype != "I64":
            raise ProtocolError("bad_dtype", f"y dtype {y_dtype!r} is not I64")
    _check_shapes(x_shape, y_shape)
    if "ids" in header:
        ids_dtype, ids_shape = _entry(header, "ids")
        if ids_dtype != "I64":
            raise ProtocolError("bad_dtype", f"ids dtype {ids_dtype!r} is not I64")
        if ids_shape != x_shape[:1]:
            raise ProtocolError("bad_shape", f"ids must be [{x_shape[0]}], not {list(ids_shape)}")
    if x_shape[0] > limits.max_samples:
        raise ProtocolError("too_large", f"{x_shape[0]} samples > {limits.max_samples}")
    if sample_shape is not None and x_shape[1:] != tuple(sample_shape):
        raise ProtocolError(
            "bad_shape", f"sample shape {list(x_shape[1:])}, expected {list(sample_shape)}"
        )
    try:
        tensors = safetensors.numpy.load(bytes(payload))
    except (SafetensorError, ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError("bad_format", f"safetensors rejected the payload: {exc}") from None
    x, y, ids = tensors["x"], tensors.get("y"), tensors.get("ids")
    if x.shape != x_shape:  # pragma: no cover - safetensors checks this
        raise ProtocolError("bad_format", "tensor data does not match the header")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ProtocolError("non_finite", "x holds NaN or infinite values")
    if y is not None:
        if int(y.min()) < 0:
            raise ProtocolError("bad_label", f"label {int(y.min())} is negative")
        if num_classes is not None and int(y.max()) >= num_classes:
            raise ProtocolError("bad_label", f"label {int(y.max())} >= num_classes {num_classes}")
    if ids is not None:
        _check_ids(ids, x_shape[0])
    return x, y, ids
