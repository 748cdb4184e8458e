"""Hostile input under hypothesis: the wire codec and a live node only ever answer.

The harness (payloads written by hand, the fault catalog, the strategies, the node in a thread)
is tests/support/hostile/; this module holds the properties.

**Codec.** ``decode_batch`` and ``decode_eval``, with the limits and the input of real models
(the default digits model and a sensor model), are fed arbitrary bytes, safetensors files
written by hand with faults drawn from the catalog ``FAULTS`` (each fault names the codes it
must produce when it is the only one), and mutations of valid payloads (bit flips, truncation,
insertions, deletions, appended bytes, a new length prefix). Every input either decodes into a
value that meets the contract (shapes, dtypes, label range, finite values, metadata) or raises
``ProtocolError`` with a code of ``ERROR_CODES``: no other exception, no example slower than
``DECODE_DEADLINE``, and no decode allocating more than a few times its payload (measured with
``tracemalloc``), so a declared huge shape is refused before anything is allocated for it.

**Node.** ``NodeHarness`` runs an embedded broker, a real ``Node`` (the default model, its own
state directory) and a peer ``aiomqtt`` client on an event loop in a background thread, started
once per test. The hypothesis test draws each input with ``st.data()`` -- relative to the seq
the node has reached -- and sends it. The answer an input must get is derived from the codec,
called with the node's own parameters, and the node's delivery rules: learned (``telemetry``)
when it decodes with the next seq, ``duplicate`` for a seq learned before, ``stale_seq`` for
seq 0 (never handled), otherwise an ``error`` with the ``ProtocolError``'s code and seq. The
node runs with ``max_seq_ahead=1`` so that an early seq is refused at once instead of held
(holding is test_delivery.py's subject). A rejected input must leave the node's SQLite files as
they were, byte for byte. Then a valid batch with the next seq must be learned; it also fences
the input: a node handles and answers its batches in order, so a second answer to the input
would arrive before the fence's telemetry.

**Profiles** (tests/conftest.py): by default each property runs 100 examples (the whole file in
about 25 s on 2 cores, once the default model is built); ``VEGA_EMU_HYPOTHESIS=long pytest
tests/node/test_hostile_input.py`` runs 10,000 per property (about an hour, most of it the node
test).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from dataset_stream import Scenario
from dataset_stream.protocol import (
    ERROR_CODES,
    RESERVED_KEYS,
    Batch,
    ErrorMessage,
    ProtocolError,
    Telemetry,
    encode_batch,
    encode_eval,
)
from device.model.bundle import ModelBundle
from tests.support.hostile import (
    BATCH_LIMITS,
    DECODE_DEADLINE,
    DEVICE,
    DIGITS,
    FAULTS,
    SENSOR,
    Model,
    NodeHarness,
    apply_edits,
    assert_contract,
    decode,
    drafts,
    edits,
    huge_integer_in_header,
    limits_for,
    node_inputs,
    valid_payloads,
)
from tests.support.statefiles import db_fingerprint

CASES: Final = [
    pytest.param(model, kind, id=f"{model.name}-{kind}")
    for model in (DIGITS, SENSOR)
    for kind in ("batch", "eval")
]


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


def test_an_integer_literal_too_long_for_python_is_bad_format() -> None:
    # found by this file: json.loads raised a plain ValueError (Python's int max_str_digits)
    value = decode(huge_integer_in_header(), "batch", DIGITS, BATCH_LIMITS)
    assert isinstance(value, ProtocolError) and value.code == "bad_format"


# -- a live node ---------------------------------------------------------------------------------


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
