"""Numeric arrays as raw little-endian bytes + dtype + shape (no pickle)."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt

from device.node.store.errors import StoreCorruptError

__all__ = ["decode_array", "encode_array"]

_KINDS = "biuf"  # bool, signed, unsigned, float


def encode_array(name: str, array: npt.ArrayLike) -> tuple[str, str, bytes]:
    """``(dtype, shape_json, data)`` of a numeric array, little-endian, C order."""
    a = np.asarray(array)
    if a.dtype.kind not in _KINDS:
        raise ValueError(f"weight {name!r} must be a numeric array, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return a.dtype.str, json.dumps(list(a.shape)), a.tobytes()


def decode_array(name: str, dtype: str, shape_json: str, data: bytes) -> npt.NDArray[np.generic]:
    """Inverse of :func:`encode_array`; a writable array that owns its memory."""
    try:
        dt = np.dtype(dtype)
        shape = tuple(int(s) for s in json.loads(shape_json))
    except (TypeError, ValueError) as exc:
        raise StoreCorruptError(
            f"weight {name!r}: bad dtype {dtype!r} or shape {shape_json!r}"
        ) from exc
    if dt.kind not in _KINDS or dt.hasobject:
        raise StoreCorruptError(f"weight {name!r}: dtype {dtype!r} is not numeric")
    expected = dt.itemsize * int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise StoreCorruptError(
            f"weight {name!r}: {len(data)} bytes stored, {expected} expected for {dtype} {shape}"
        )
    return np.frombuffer(data, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
