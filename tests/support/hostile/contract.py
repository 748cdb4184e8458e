"""What a receiving model accepts, and the wire decoder watched while it decodes.

:func:`decode` calls ``decode_batch`` / ``decode_eval`` like a node would and lets nothing but a
``ProtocolError`` with a known code out, within an allocation budget; :func:`assert_contract`
checks that what it returned is what the protocol promises the node.
"""

from __future__ import annotations

import math
import tracemalloc
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import numpy as np

from dataset_stream.protocol import (
    ERROR_CODES,
    EVAL_LIMITS,
    Batch,
    EvalSet,
    Limits,
    ProtocolError,
    decode_batch,
    decode_eval,
)

__all__ = [
    "BATCH_LIMITS",
    "DECODE_DEADLINE",
    "DIGITS",
    "SENSOR",
    "SEQ_END",
    "Decoded",
    "Model",
    "assert_contract",
    "decode",
    "limits_for",
]

SEQ_END: Final = 10**18  # seqs are below this
#: A decode of a payload of at most a few hundred KiB never takes this long, even on a busy CI.
DECODE_DEADLINE: Final = timedelta(seconds=2)


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


def limits_for(kind: str) -> Limits:
    """The limits a node decodes a ``batch`` or an ``eval`` payload with."""
    return BATCH_LIMITS if kind == "batch" else EVAL_LIMITS


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
