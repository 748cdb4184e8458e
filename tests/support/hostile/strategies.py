"""Hypothesis strategies for hostile input: drafts with faults from the catalog, valid payloads,
byte-level edits of them, and the inputs a live node is sent.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from hypothesis import strategies as st

from dataset_stream.protocol import RESERVED_KEYS, encode_batch, encode_eval
from tests.support.hostile.contract import DIGITS, SEQ_END, Model
from tests.support.hostile.draft import Draft, NodeSeq, NodeTime
from tests.support.hostile.faults import FAULTS, NODE_FAULTS, Fault
from tests.support.times import T0

__all__ = [
    "EDIT_OPS",
    "Edit",
    "Hostile",
    "Strategy",
    "any_seq",
    "any_t",
    "apply_edits",
    "drafts",
    "edits",
    "node_inputs",
    "valid_payloads",
]

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


@dataclass(frozen=True, slots=True)
class Hostile:
    """One input for the node: what it is, and how to build it for a node at ``last_seq``."""

    what: str
    build: Callable[[int], bytes] = field(repr=False)


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
