"""The byte budget of held batches (device/node/delivery.py): the seq book gives up the gap as
soon as the early batches it holds keep more than ``max_held_bytes``, as it does when they are
more than ``max_held``.

A table of cases, then a hypothesis property that plays the sequencer's loop (hold, then
release while over budget) over arbitrary sizes and orders: after each arrival is acted on, the
held batches keep at most ``max_held_bytes`` and are at most ``max_held``, and every seq is
still learned at most once, in order. ``held_size_bytes`` counts what a held batch keeps: its
wire payload and its decoded arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataset_stream.protocol import decode_batch, encode_batch
from device.node.delivery import Gap, Hold, Learn, SeqBook
from device.node.sequencer import held_size_bytes
from device.node.settings import DeliverySettings

MiB = 1024 * 1024
RULES = DeliverySettings(hold_s=30.0, max_held=64, max_held_bytes=10 * MiB, max_seq_ahead=1000)


def book_holding(*held: tuple[int, int], last_seq: int | None = 3) -> SeqBook:
    """A book at ``last_seq`` that then held ``(seq, size_bytes)`` each (at time 0)."""
    book = SeqBook(RULES, last_seq=last_seq)
    for seq, size in held:
        assert isinstance(book.arrived(seq, 0.0, size_bytes=size), Hold)
    return book


@dataclass(frozen=True)
class BudgetCase:
    name: str
    book: Callable[[], SeqBook]
    due: Learn | None
    held_bytes: int


CASES = [
    BudgetCase("nothing held", lambda: book_holding(), None, 0),
    BudgetCase(
        "exactly the budget is not too much",
        lambda: book_holding((6, 4 * MiB), (8, 6 * MiB)),
        None,
        10 * MiB,
    ),
    BudgetCase(
        "one byte over forces the gap at once",
        lambda: book_holding((6, 4 * MiB), (8, 6 * MiB + 1)),
        Learn((6,), Gap(4, 5)),
        10 * MiB + 1,
    ),
    BudgetCase(
        "one batch larger than the budget is released at once",
        lambda: book_holding((9, 11 * MiB)),
        Learn((9,), Gap(4, 8)),
        11 * MiB,
    ),
    BudgetCase(
        "the run from the lowest held seq goes with the gap",
        lambda: book_holding((5, 5 * MiB), (6, 5 * MiB), (9, 1)),
        Learn((5, 6), Gap(4, 4)),
        10 * MiB + 1,
    ),
    BudgetCase(
        "a node that never learned starts at its lowest held seq",
        lambda: book_holding((4, 8 * MiB), (7, 8 * MiB), last_seq=None),
        Learn((4,)),
        16 * MiB,
    ),
    BudgetCase(
        "a copy of a held seq adds nothing",
        lambda: _held_copy(),
        None,
        6 * MiB,
    ),
]


def _held_copy() -> SeqBook:
    book = book_holding((6, 6 * MiB))
    book.arrived(6, 1.0, size_bytes=6 * MiB)  # HeldCopy: acknowledged, not held again
    return book


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_byte_budget(case: BudgetCase) -> None:
    book = case.book()
    assert book.held_bytes == case.held_bytes
    assert book.due(1.0) == case.due  # well before the 30 s deadline


def test_learning_a_held_seq_frees_its_bytes() -> None:
    book = book_holding((5, 3 * MiB), (7, 4 * MiB))
    decision = book.arrived(4, 1.0, size_bytes=2 * MiB)
    assert decision == Learn((4, 5))
    for seq in decision.seqs:
        book.committed(seq, 1.0)
    assert (book.held, book.held_bytes) == ((7,), 4 * MiB)


def test_the_default_budget_and_its_check() -> None:
    assert DeliverySettings().max_held_bytes == 64 * MiB
    with pytest.raises(ValueError, match="max_held_bytes"):
        DeliverySettings(max_held_bytes=0)
    with pytest.raises(ValueError, match="size_bytes"):
        SeqBook(RULES).arrived(5, 0.0, size_bytes=-1)


def test_a_held_batch_counts_its_payload_and_its_arrays() -> None:
    x = np.zeros((50, 8, 8, 1), dtype=np.uint8)
    y = np.arange(50, dtype=np.int64)
    payload = encode_batch(x, y, seq=7, t=0.0, source="t", ids=np.arange(50, dtype=np.int64))
    batch = decode_batch(payload)
    message = aiomqtt.Message("vega/node-0000/batch", payload, 1, False, 1, None)
    assert batch.ids is not None
    expected = len(payload) + batch.x.nbytes + batch.y.nbytes + batch.ids.nbytes
    assert held_size_bytes(message, batch) == expected
    assert expected > 2 * len(payload) - 1_000  # about twice the wire size: decoded arrays copy


@given(data=st.data())
def test_held_batches_never_keep_more_than_the_budget(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 30), label="n")
    rules = DeliverySettings(
        hold_s=30.0,
        max_held=data.draw(st.integers(1, 8), label="max_held"),
        max_held_bytes=data.draw(st.integers(1, 100), label="max_held_bytes"),
        max_seq_ahead=1000,
    )
    sizes = data.draw(st.lists(st.integers(0, 60), min_size=n, max_size=n), label="sizes")
    order = data.draw(st.permutations(range(1, n + 1)), label="order")
    book = SeqBook(rules, last_seq=0)
    learned: list[int] = []
    gaps: list[Gap] = []

    def carry_out(decision: Learn) -> None:
        if decision.gap is not None:
            gaps.append(decision.gap)
            book.skipped(decision.gap, 1.0)
        for seq in decision.seqs:
            learned.append(seq)
            book.committed(seq, 1.0)

    for seq in order:
        if book.is_past(seq):
            continue  # given up in a gap before it arrived: stale
        decision = book.arrived(seq, 1.0, size_bytes=sizes[seq - 1])
        if isinstance(decision, Learn):
            carry_out(decision)
        else:
            assert isinstance(decision, Hold)
            while (release := book.due(1.0)) is not None:  # as the sequencer does
                carry_out(release)
        # one arrival acted on: within both budgets again, before the deadline
        assert book.held_bytes <= rules.max_held_bytes
        assert len(book.held) <= rules.max_held
    assert learned == sorted(set(learned))  # each at most once, in order
    skipped = {s for g in gaps for s in range(g.first, g.last + 1)}
    assert not skipped & set(learned)
    assert set(learned) | skipped | set(book.held) == set(range(1, n + 1))
