"""The delivery rules without a broker: the seq book (device/node/delivery.py) and the clock.

Table-driven cases for each rule (next, early, held copy, run release, duplicate, stale, too far
ahead, gap at the deadline or on too many held, a node that never learned), then a hypothesis
property: whatever the order and duplication of seqs 1..n, with the hold deadline checked at
arbitrary moments and connections lost at arbitrary moments, every seq that arrived is learned
exactly once and in order, or given up in a reported gap (and then never learned); a seq answered
``duplicate`` or ``stale_seq`` is never learned by that arrival. Over a real broker the same
rules are checked by tests/node/test_delivery.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.clock import Clock, SimulatedClock, SystemClock
from device.node.delivery import (
    Arrival,
    Duplicate,
    Gap,
    HeldCopy,
    Hold,
    Learn,
    SeqBook,
    Stale,
    TooFarAhead,
)
from device.node.settings import DeliverySettings

RULES = DeliverySettings(hold_s=30.0, max_held=3, max_seq_ahead=10)


def book_at(last_seq: int | None, *held: int, now_s: float = 0.0) -> SeqBook:
    """A book restored at ``last_seq`` that then held ``held`` (each arriving at ``now_s``)."""
    book = SeqBook(RULES, last_seq=last_seq)
    for seq in held:
        assert isinstance(book.arrived(seq, now_s), Hold)
    return book


# -- arrivals -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrivalCase:
    name: str
    book: Callable[[], SeqBook]
    seq: int
    decision: Arrival
    handled: bool = False
    now_s: float = 10.0


ARRIVALS = [
    ArrivalCase("the next seq is learned", lambda: book_at(3), 4, Learn((4,))),
    ArrivalCase("a new node learns seq 1", lambda: book_at(None), 1, Learn((1,))),
    ArrivalCase("a new node learns seq 0", lambda: book_at(None), 0, Learn((0,))),
    ArrivalCase("an early seq is held", lambda: book_at(3), 6, Hold(6, 4, 40.0)),
    ArrivalCase("a new node holds seq 5", lambda: book_at(None), 5, Hold(5, 1, 40.0)),
    ArrivalCase(
        "a second early seq keeps the first deadline",
        lambda: book_at(3, 6, now_s=2.0),
        8,
        Hold(8, 4, 32.0),
    ),
    ArrivalCase("a copy of a held seq", lambda: book_at(3, 6), 6, HeldCopy(6)),
    ArrivalCase(
        "the next seq releases the held run after it",
        lambda: book_at(3, 5, 6, 8),
        4,
        Learn((4, 5, 6)),
    ),
    ArrivalCase("a learned seq is a duplicate", lambda: book_at(3), 2, Duplicate(2), True),
    ArrivalCase("the last seq is a duplicate", lambda: book_at(3), 3, Duplicate(3), True),
    ArrivalCase("a seq given up in a gap is stale", lambda: book_at(3), 2, Stale(2)),
    ArrivalCase("seq 0, never handled, is stale", lambda: book_at(1), 0, Stale(0)),
    ArrivalCase(
        "a seq too far past the last is refused", lambda: book_at(3), 14, TooFarAhead(14, 3, 10)
    ),
    ArrivalCase("max_seq_ahead past the last is held", lambda: book_at(3), 13, Hold(13, 4, 40.0)),
    ArrivalCase(
        "a new node has no last seq to be too far from",
        lambda: book_at(None),
        10**9,
        Hold(10**9, 1, 40.0),
    ),
]


@pytest.mark.parametrize("case", ARRIVALS, ids=[c.name for c in ARRIVALS])
def test_an_arrival_gets_its_decision(case: ArrivalCase) -> None:
    book = case.book()
    held, last = book.held, book.last_seq
    decision = book.arrived(case.seq, case.now_s, handled=case.handled)
    assert decision == case.decision
    # deciding commits nothing: only a hold changes what the book holds
    assert book.last_seq == last
    assert book.held == (tuple(sorted({*held, case.seq})) if isinstance(decision, Hold) else held)


def test_handled_is_only_asked_for_past_seqs() -> None:
    book = book_at(3)
    assert [book.is_past(s) for s in (0, 3, 4)] == [True, True, False]
    assert not book_at(None).is_past(0)
    assert book.arrived(4, 0.0, handled=True) == Learn((4,))  # not past: the answer is unused


# -- what is due --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueCase:
    name: str
    book: Callable[[], SeqBook]
    now_s: float
    due: Learn | None


DUE = [
    DueCase("nothing held", lambda: book_at(3), 10**6, None),
    DueCase("before the deadline", lambda: book_at(3, 6), 29.9, None),
    DueCase("at the deadline: the gap", lambda: book_at(3, 6), 30.0, Learn((6,), Gap(4, 5))),
    DueCase(
        "the run after the gap, up to the next hole",
        lambda: book_at(3, 9, 6, 7),
        31.0,
        Learn((6, 7), Gap(4, 5)),
    ),
    DueCase(
        "a new node starts at its lowest held seq", lambda: book_at(None, 4, 3), 30.0, Learn((3, 4))
    ),
    DueCase("max_held held is not too many", lambda: book_at(3, 6, 8, 10), 1.0, None),
    DueCase(
        "one more than max_held forces the gap at once",
        lambda: book_at(3, 6, 8, 10, 12),
        1.0,
        Learn((6,), Gap(4, 5)),
    ),
]


@pytest.mark.parametrize("case", DUE, ids=[c.name for c in DUE])
def test_what_is_due(case: DueCase) -> None:
    book = case.book()
    held = book.held
    assert book.due(case.now_s) == case.due
    assert book.held == held  # deciding commits nothing


# -- commits move the book ----------------------------------------------------------------------


def test_progress_restarts_the_hold_deadline() -> None:
    book = book_at(3, 6, now_s=0.0)
    assert book.deadline_s == 30.0
    assert book.arrived(4, 25.0) == Learn((4,))
    book.committed(4, 26.0)
    assert (book.last_seq, book.held, book.deadline_s) == (4, (6,), 56.0)
    assert book.due(55.0) is None
    assert book.due(56.0) == Learn((6,), Gap(5, 5))


def test_a_gap_then_its_run_are_committed() -> None:
    book = book_at(3, 6, 7, 9)
    release = book.due(30.0)
    assert release == Learn((6, 7), Gap(4, 5))
    book.skipped(Gap(4, 5), 30.0)
    book.committed(6, 30.5)
    book.committed(7, 31.0)
    assert (book.last_seq, book.held, book.deadline_s) == (7, (9,), 61.0)
    assert book.arrived(5, 32.0) == Stale(5)
    assert book.arrived(6, 32.0, handled=True) == Duplicate(6)
    book.skipped(Gap(8, 8), 92.0)
    book.committed(9, 92.0)
    assert (book.last_seq, book.held, book.deadline_s) == (9, (), None)


def test_commits_out_of_order_are_refused() -> None:
    book = book_at(3, 6)
    with pytest.raises(ValueError, match="not the next one"):
        book.committed(6, 1.0)
    with pytest.raises(ValueError, match="does not follow"):
        book.skipped(Gap(5, 5), 1.0)
    with pytest.raises(ValueError, match="does not follow"):
        book_at(None).skipped(Gap(1, 2), 1.0)
    fresh = book_at(None, 5)
    fresh.committed(5, 1.0)  # a node that never learned starts anywhere
    assert fresh.next_seq == 6


def test_a_book_restored_from_the_last_seq() -> None:
    book = SeqBook(RULES, last_seq=7)
    assert (book.last_seq, book.next_seq, book.held, book.deadline_s) == (7, 8, (), None)
    assert book.arrived(8, 0.0) == Learn((8,))
    with pytest.raises(ValueError, match="last_seq"):
        SeqBook(RULES, last_seq=-1)


def test_decisions_are_checked_values() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        Learn((4, 6))
    with pytest.raises(ValueError, match="consecutive"):
        Learn(())
    with pytest.raises(ValueError, match="just before"):
        Learn((7,), Gap(4, 5))
    with pytest.raises(ValueError, match="first <= last"):
        Gap(5, 4)
    assert Gap(4, 6).size == 3


# -- the property -------------------------------------------------------------------------------


@dataclass
class Model:
    """A node as far as delivery goes: carries out the book's decisions as node.py does, and
    keeps its own account of what happened to each seq to check the book against."""

    rules: DeliverySettings
    book: SeqBook
    now_s: float = 0.0
    last: int | None = None  # what the node committed last (learned or given up)
    learned: list[int] = field(default_factory=list)
    given_up: set[int] = field(default_factory=set)  # in a reported gap
    held: set[int] = field(default_factory=set)  # the batches the node keeps
    arrived: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)  # too far ahead when they arrived
    requeued: list[int] = field(default_factory=list)  # unacknowledged: the broker resends
    book_started_fresh: bool = False  # a node that never learned (else restored at seq 0)
    waiting_since_s: float | None = None  # first hold or last progress, while something is held

    def carry_out(self, decision: Learn, in_hand: int | None = None) -> None:
        if decision.gap is not None:
            gap = decision.gap
            assert self.last is not None and gap.first == self.last + 1
            lost = set(range(gap.first, gap.last + 1))
            assert not lost & {*self.learned, *self.held}, "a batch in hand given up"
            self.given_up |= lost
            self.last = gap.last
            self.book.skipped(gap, self.now_s)
            self.progressed()
        for seq in decision.seqs:
            assert seq == in_hand or seq in self.held, "only a batch in hand is learned"
            assert seq not in self.learned, "learned twice"
            assert seq not in self.given_up, "learned after it was reported as a gap"
            assert self.last is None or seq == self.last + 1, "learned out of order"
            self.learned.append(seq)
            self.last = seq
            self.held.discard(seq)
            self.book.committed(seq, self.now_s)
            self.progressed()

    def progressed(self) -> None:
        self.waiting_since_s = self.now_s if self.held else None

    def before_start(self, seq: int) -> bool:
        """A node that never learned starts where the stream does: seqs below are not lost."""
        return self.book_started_fresh and bool(self.learned) and seq < self.learned[0]

    def arrive(self, seq: int) -> None:
        self.arrived.add(seq)
        handled = self.book.is_past(seq) and seq in self.learned
        decision = self.book.arrived(seq, self.now_s, handled=handled)
        match decision:
            case Learn():
                assert decision.gap is None and decision.seqs[0] == seq
                self.carry_out(decision, in_hand=seq)
            case Hold():
                assert seq not in self.held and decision.waiting_for == self.book.next_seq
                if not self.held:
                    self.waiting_since_s = self.now_s
                self.held.add(seq)
                release = self.book.due(self.now_s)  # too many held: the gap at once
                if release is not None:
                    self.carry_out(release)
            case HeldCopy():
                assert seq in self.held
            case Duplicate():
                assert seq in self.learned
            case Stale():
                assert seq not in self.learned
                assert seq in self.given_up or self.before_start(seq)
            case TooFarAhead():
                assert self.last is not None and seq - self.last > self.rules.max_seq_ahead
                self.refused.add(seq)

    def tick(self, delta_s: float) -> None:
        self.now_s += delta_s
        release = self.book.due(self.now_s)
        # held batches wait hold_s after the first hold or the last progress, no less, no more
        since = self.waiting_since_s
        waited_out = since is not None and self.now_s >= since + self.rules.hold_s
        assert (release is not None) == waited_out, (release, since, self.now_s)
        if release is not None:
            self.carry_out(release)

    def reconnect(self) -> None:
        """A new connection: held batches come again; the book restarts from the last seq."""
        self.requeued.extend(sorted(self.held))
        self.held.clear()
        self.waiting_since_s = None
        self.book = SeqBook(self.rules, last_seq=self.book.last_seq)

    def check(self) -> None:
        book = self.book
        assert book.last_seq == self.last
        assert set(book.held) == self.held
        assert (book.deadline_s is None) == (not self.held)
        assert all(seq > book.next_seq for seq in self.held)
        assert len(self.held) <= self.rules.max_held


@given(data=st.data())
def test_any_order_and_duplication_learns_each_seq_once_in_order_or_reports_its_gap(
    data: st.DataObject,
) -> None:
    n = data.draw(st.integers(1, 25), label="n")
    rules = DeliverySettings(
        hold_s=data.draw(st.sampled_from([0.0, 1.0, 30.0]), label="hold_s"),
        max_held=data.draw(st.integers(1, 6), label="max_held"),
        max_seq_ahead=data.draw(st.sampled_from([2, 5, 1_000]), label="max_seq_ahead"),
    )
    start = data.draw(st.sampled_from([None, 0]), label="restored at")  # new, or restored
    copies = data.draw(st.lists(st.integers(1, n), max_size=2 * n), label="copies")
    queue = list(data.draw(st.permutations([*range(1, n + 1), *copies]), label="order"))
    model = Model(
        rules, SeqBook(rules, last_seq=start), last=start, book_started_fresh=start is None
    )
    while queue or model.requeued:
        if not queue:  # the broker sends again what was held when a connection was lost
            queue, model.requeued = model.requeued, []
        step = data.draw(st.sampled_from(["arrive", "arrive", "tick", "reconnect"]))
        if step == "tick":  # time passes; the hold deadline is checked
            model.tick(data.draw(st.sampled_from([0.0, 0.5, 1.0, 29.0, 30.0, 100.0])))
        elif step == "reconnect":
            model.reconnect()
        else:
            model.arrive(queue.pop(0))
        model.check()
    while model.held:  # in the end, time passes until nothing is held any more
        model.tick(rules.hold_s + 1.0)
        model.check()
    # every seq from where the node started to the last it committed: learned once or given
    # up in a reported gap, never both; beyond it only seqs refused as too far ahead
    if model.last is not None:
        first = model.learned[0] if model.book_started_fresh else 1
        assert sorted([*model.learned, *model.given_up]) == list(range(first, model.last + 1))
    assert not model.given_up & set(model.learned)
    assert set(model.learned) <= model.arrived
    unaccounted = model.arrived - set(model.learned) - model.given_up
    top = 0 if model.last is None else model.last
    assert all(
        (seq in model.refused and seq > top) or model.before_start(seq) for seq in unaccounted
    ), unaccounted
    if rules.max_seq_ahead >= n:  # nothing refused: every seq that arrived is accounted for
        assert not model.refused
        assert all(model.before_start(seq) for seq in unaccounted)


# -- clocks -------------------------------------------------------------------------------------


async def test_a_simulated_clock_moves_only_when_advanced_and_wakes_sleepers_in_order() -> None:
    clock = SimulatedClock(start_s=100.0, epoch_s=1_700_000_000.0)
    assert isinstance(clock, Clock)
    assert (clock.monotonic_s(), clock.time_s()) == (100.0, 1_700_000_000.0)
    woke: list[str] = []

    async def sleeper(name: str, delay_s: float) -> None:
        await clock.sleep(delay_s)
        woke.append(name)

    late = asyncio.create_task(sleeper("late", 10.0))
    early = asyncio.create_task(sleeper("early", 5.0))
    await clock.wait_for_sleepers(2)
    assert clock.sleeping == 2
    clock.advance(4.9)
    assert clock.sleeping == 2  # 5 s have not passed yet: nobody was woken
    clock.advance(0.1)
    await early
    assert woke == ["early"] and clock.sleeping == 1 and not late.done()
    clock.advance(100.0)
    await late
    assert woke == ["early", "late"]
    assert (clock.monotonic_s(), clock.time_s()) == (205.0, 1_700_000_105.0)


async def test_a_simulated_sleep_can_be_cancelled_or_be_zero() -> None:
    clock = SimulatedClock()
    await clock.sleep(0.0)  # returns at once, as does a negative delay
    await clock.sleep(-1.0)
    task = asyncio.create_task(clock.sleep(1.0))
    await clock.wait_for_sleepers(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleeping == 0
    clock.advance(2.0)  # nothing left to wake
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1.0)


async def test_the_system_clock_is_the_machines() -> None:
    import time

    clock = SystemClock()
    assert isinstance(clock, Clock)
    before = time.monotonic()
    await clock.sleep(0.01)
    assert clock.monotonic_s() - before >= 0.01
    assert abs(clock.time_s() - time.time()) < 1.0
