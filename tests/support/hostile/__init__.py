"""The harness of tests/node/test_hostile_input.py: hostile wire input for the codec and a node.

- :mod:`.contract`: the models a payload is meant for (the default digits model, ``U8
  [N, 1, 32, 32]`` and 10 classes; a sensor model, ``F32 [N, 3, 64]`` and 6 classes), the
  decoder under watch (:func:`~.contract.decode`: a ``ProtocolError`` with a code of
  ``ERROR_CODES`` or a value, within an allocation budget measured with ``tracemalloc``) and the
  contract a decoded value meets (:func:`~.contract.assert_contract`).
- :mod:`.draft`: safetensors payloads written by hand (:class:`~.draft.Draft`).
- :mod:`.faults`: the fault catalog ``FAULTS``; each fault names the codes it must produce when
  it is the only one.
- :mod:`.strategies`: hypothesis strategies: drafts with faults, valid payloads, mutations of
  them (bit flips, truncation, insertions, deletions, appended bytes, a new length prefix), and
  the inputs a node is sent, with seqs relative to the seq it has reached.
- :mod:`.node`: :class:`~.node.NodeHarness`, an embedded broker, a real ``Node`` and a peer
  client on an event loop in a background thread, and the answer a node owes each input.
"""

from tests.support.hostile.contract import (
    BATCH_LIMITS,
    DECODE_DEADLINE,
    DIGITS,
    SENSOR,
    SEQ_END,
    Decoded,
    Model,
    assert_contract,
    decode,
    limits_for,
)
from tests.support.hostile.draft import Draft, NodeSeq, NodeTime, huge_integer_in_header
from tests.support.hostile.faults import FAULTS, NODE_FAULTS, Fault, fault
from tests.support.hostile.node import DEVICE, NodeHarness, NodeView
from tests.support.hostile.strategies import (
    Hostile,
    apply_edits,
    drafts,
    edits,
    node_inputs,
    valid_payloads,
)

__all__ = [
    "BATCH_LIMITS",
    "DECODE_DEADLINE",
    "DEVICE",
    "DIGITS",
    "FAULTS",
    "NODE_FAULTS",
    "SENSOR",
    "SEQ_END",
    "Decoded",
    "Draft",
    "Fault",
    "Hostile",
    "Model",
    "NodeHarness",
    "NodeSeq",
    "NodeTime",
    "NodeView",
    "apply_edits",
    "assert_contract",
    "decode",
    "drafts",
    "edits",
    "fault",
    "huge_integer_in_header",
    "limits_for",
    "node_inputs",
    "valid_payloads",
]
