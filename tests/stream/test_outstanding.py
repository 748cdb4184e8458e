"""The producer's book of outstanding batches, without a broker: a table of timelines, then
properties under hypothesis, the last one a lossy channel between the book and a node's own
delivery rules (:class:`~device.node.delivery.SeqBook`): every seq learned exactly once.

Also the outcome a producer reports (:mod:`dataset_stream.outcome`): counts, the line naming
what got no answer, the exit status, the default drain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_stream.answers import AnswerLedger
from dataset_stream.bridge.kept import KeptBatches
from dataset_stream.outcome import (
    MIN_DRAIN_S,
    UNANSWERED_EXIT_STATUS,
    Delivery,
    default_drain_s,
    seq_ranges,
)
from dataset_stream.outstanding import Outstanding, ResendPolicy
from dataset_stream.protocol import ErrorMessage
from device.node.delivery import Duplicate, HeldCopy, Hold, Learn, SeqBook, Stale
from device.node.settings import DeliverySettings
from tests.support.messages import telemetry

D = "node-0000"
POLICY = ResendPolicy(first_s=5.0, cap_s=60.0, max_resends=6)


def test_the_policy_waits_double_up_to_the_cap() -> None:
    assert [POLICY.wait_s(k) for k in range(8)] == [5, 10, 20, 40, 60, 60, 60, 60]
    assert POLICY.patience_s == 5 + 10 + 20 + 40 + 60 + 60
    assert ResendPolicy(max_resends=0).patience_s == 0
    assert ResendPolicy.for_pace(60.0, 240.0) == ResendPolicy() == ResendPolicy.for_pace(60, None)
    assert ResendPolicy.for_pace(60.0, 1.0) == ResendPolicy(first_s=60.0, cap_s=60.0)
    assert ResendPolicy.for_pace(60.0, 0.5) == ResendPolicy(first_s=120.0, cap_s=120.0)
    for bad in (
        {"first_s": 0},
        {"first_s": math.nan},
        {"first_s": 2, "cap_s": 1},
        {"cap_s": math.inf},
        {"max_resends": -1},
    ):
        with pytest.raises(ValueError):
            ResendPolicy(**bad)  # type: ignore[arg-type]


def test_a_seq_is_handed_over_once() -> None:
    book = Outstanding(POLICY)
    assert book.sent(D, 1, 0.0) and book.sent(D, 2, 0.0)
    assert not book.sent(D, 2, 1.0) and not book.sent(D, 1, 1.0)  # published before
    assert book.unanswered() == {D: [1, 2]} and book.count == 2
    assert book.answered(D, 1, 2.0, in_order=True)
    assert not book.answered(D, 1, 2.0, in_order=True)  # a second answer answers nothing
    assert not book.sent(D, 1, 3.0)  # an answered seq stays answered
    assert book.unanswered() == {D: [2]}
    with pytest.raises(ValueError):
        book.sent(D, -1, 0.0)


def test_a_silent_device_gets_each_batch_again_with_backoff_then_no_more() -> None:
    book = Outstanding(POLICY)
    book.sent(D, 1, 0.0)
    times = []
    now = 0.0
    while now < 400:
        if book.due(now):
            assert book.due(now) == {D: [1]}
            assert book.resent(D, 1, now, timed_out=True)
            times.append(now)
        now += 0.5
    assert times == [5, 15, 35, 75, 135, 195]  # 6 re-sends, waits 5, 10, 20, 40, 60, 60
    assert book.unanswered() == {D: [1]}  # given up re-sending, still waited for
    assert book.answered(D, 1, 401.0, in_order=True)


@pytest.mark.parametrize(
    ("events", "due_at", "why"),
    [
        ([], 5.0, "silent: due after first_s"),
        ([("heard", 4.0)], 9.0, "heard at 4: quiet again at 9"),
        ([("heard", 4.0), ("heard", 8.0)], 13.0, "a device answering is busy, not lost"),
        ([("answer", 3, 2.0)], 5.0, "the node is past seq 2 (answered 3 in order)"),
        ([("refuse", 3, 2.0)], 7.0, "a refusal on sight says nothing about the order"),
        ([("gap", 2, 3, 4.0)], None, "a gap answers seq 2"),
        ([("answer", 2, 1.0)], None, "answered"),
        ([("reconnect", 3.0)], 8.0, "published again at 3: the wait restarts"),
        ([("abandon",)], None, "abandoned: never again"),
    ],
)
def test_when_a_batch_is_due(
    events: list[tuple[object, ...]], due_at: float | None, why: str
) -> None:
    book = Outstanding(POLICY)
    book.sent(D, 1, 0.0)
    book.answered(D, 1, 0.0, in_order=True)
    book.sent(D, 2, 0.0)
    book.sent(D, 3, 0.0)
    for event in events:
        match event:
            case ("heard", float(t)):
                book.heard(D, t)
            case ("answer", int(seq), float(t)):
                book.answered(D, seq, t, in_order=True)
            case ("refuse", int(seq), float(t)):
                book.answered(D, seq, t, in_order=False)
            case ("gap", int(first), int(last), float(t)):
                assert book.gap(D, first, last, t) == [2, 3]
            case ("reconnect", float(t)):
                assert book.resent(D, 2, t, timed_out=False)
            case ("abandon",):
                book.abandon(D, 2)
    first_due = next((t / 2 for t in range(0, 200) if 2 in book.due(t / 2).get(D, [])), None)
    assert first_due == due_at, why


def test_a_device_away_gets_no_copies_until_it_is_back() -> None:
    book = Outstanding(POLICY)
    book.sent(D, 1, 0.0)
    book.away(D, True)  # its status says offline: the broker queues for it
    assert book.due(100.0) == {}
    assert book.resendable(D) == [1]  # its return publishes it again
    book.away(D, False)
    assert book.due(100.0) == {D: [1]}


def test_an_abandoned_batch_stays_unanswered_until_answered() -> None:
    book = Outstanding(POLICY)
    for seq in (1, 2, 3):
        book.sent(D, seq, 0.0)
    book.abandon(D, 1)
    assert book.resendable(D) == [2, 3]
    assert book.due(100.0) == {D: [2, 3]}
    assert not book.resent(D, 1, 100.0, timed_out=False)
    assert book.unanswered() == {D: [1, 2, 3]}
    assert book.answered(D, 1, 101.0, in_order=True)  # a late answer still answers it
    assert book.unanswered() == {D: [2, 3]}
    assert not book.resent(D, 1, 102.0, timed_out=True)  # answered: nothing to publish


# -- properties -------------------------------------------------------------------------------

Op = tuple[str, int, float]
ops = st.lists(
    st.tuples(
        st.sampled_from(["send", "answer", "refuse", "gap", "heard", "resend", "reconnect"]),
        st.integers(1, 12),
        st.floats(0.0, 30.0, allow_nan=False),
    ),
    max_size=80,
)


@given(ops, st.integers(0, 4))
def test_the_book_is_what_was_sent_less_what_was_answered(
    steps: list[Op], max_resends: int
) -> None:
    policy = ResendPolicy(first_s=2.0, cap_s=8.0, max_resends=max_resends)
    book = Outstanding(policy)
    sent: set[int] = set()
    answered: set[int] = set()
    timeouts: dict[int, int] = {}
    now = 0.0
    for kind, seq, dt in steps:
        now += dt
        if kind == "send":
            high = max(sent, default=0)
            assert book.sent(D, seq, now) == (seq > high)
            if seq > high:
                sent.add(seq)
        elif kind in ("answer", "refuse"):
            first = book.answered(D, seq, now, in_order=kind == "answer")
            assert first == (seq in sent and seq not in answered)
            if first:
                answered.add(seq)
        elif kind == "gap":
            skipped = book.gap(D, seq, seq + 2, now)
            assert skipped == sorted(s for s in sent - answered if seq <= s <= seq + 2)
            answered.update(skipped)
        elif kind == "heard":
            book.heard(D, now)
        else:
            timed_out = kind == "resend"
            due = book.due(now).get(D, [])
            for s in due:  # due: outstanding, its wait passed, under the bound
                assert s in sent - answered and timeouts.get(s, 0) < max_resends
            for s in due if timed_out else sorted(sent - answered):
                assert book.resent(D, s, now, timed_out=timed_out)
                if timed_out:
                    timeouts[s] = timeouts.get(s, 0) + 1
        assert book.unanswered().get(D, []) == sorted(sent - answered)
    assert all(n <= max_resends for n in timeouts.values())
    # a device silent from now on gets every batch under the bound again, in time
    later = now + policy.first_s + policy.cap_s
    assert book.due(later).get(D, []) == sorted(
        s for s in sent - answered if timeouts.get(s, 0) < max_resends
    )


@dataclass
class Channel:
    """A broker that drops: each seq's first ``failures[seq]`` attempts are lost (the batch,
    or its answer, by ``lose_answer``), later ones arrive."""

    failures: dict[int, int]
    lose_answer: dict[int, bool]
    attempts: dict[int, int] = field(default_factory=dict)

    def delivers(self, seq: int) -> tuple[bool, bool]:
        """(the batch arrives, its answer arrives) for the next attempt of ``seq``."""
        n = self.attempts[seq] = self.attempts.get(seq, 0) + 1
        if n > self.failures.get(seq, 0):
            return True, True
        return (True, False) if self.lose_answer.get(seq) else (False, False)


class SimNode:
    """A node's delivery rules (the real :class:`SeqBook`) and what it answers."""

    def __init__(self) -> None:
        self.book = SeqBook(DeliverySettings(hold_s=1e9))
        self.learned: list[int] = []

    def arrive(self, seq: int, now: float) -> list[tuple[str, int]]:
        decision = self.book.arrived(seq, now, handled=seq in self.learned)
        if isinstance(decision, Learn):
            for s in decision.seqs:
                self.learned.append(s)
                self.book.committed(s, now)
            return [("telemetry", s) for s in decision.seqs]
        if isinstance(decision, Duplicate):
            return [("duplicate", seq)]
        if isinstance(decision, Stale):
            return [("stale_seq", seq)]
        assert isinstance(decision, Hold | HeldCopy)
        return []


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 10),
    st.dictionaries(st.integers(1, 10), st.integers(0, 3)),
    st.dictionaries(st.integers(1, 10), st.booleans()),
)
def test_through_a_lossy_broker_every_seq_is_learned_once(
    n: int, failures: dict[int, int], lose_answer: dict[int, bool]
) -> None:
    """A producer sends seqs 1..n, one a second, re-sending what its book says; the broker loses
    a few attempts of each seq (the batch or its answer); the node learns in order."""
    ledger = AnswerLedger("vega", [D], book=Outstanding(ResendPolicy(2.0, 8.0, 10)))
    channel, node = Channel(failures, lose_answer), SimNode()
    clock = [0.0]
    ledger.clock = lambda: clock[0]

    def publish(seq: int) -> None:
        batch_arrives, answer_arrives = channel.delivers(seq)
        if not batch_arrives:
            return
        for kind, s in node.arrive(seq, clock[0]):
            if not answer_arrives and s == seq:
                continue
            if kind == "telemetry":
                ledger.handle(f"vega/{D}/telemetry", telemetry(D, s))
            else:
                ledger.handle(f"vega/{D}/error", ErrorMessage(D, kind, "x", seq=s).to_json())

    for tick in range(400):
        clock[0] = tick / 2
        if tick % 2 == 0 and tick // 2 + 1 <= n:
            seq = tick // 2 + 1
            assert ledger.handing_over(D, seq)
            publish(seq)
        for seq in ledger.book.due(clock[0]).get(D, []):
            if ledger.book.resent(D, seq, clock[0], timed_out=True):  # not answered meanwhile
                publish(seq)
    assert node.learned == list(range(1, n + 1))  # each once, in order
    assert ledger.unanswered() == {}
    delivery = ledger.delivery()
    assert delivery.complete and delivery.sent == n
    assert delivery.learned + delivery.duplicates == n and delivery.refused == delivery.lost == 0


# -- the outcome ------------------------------------------------------------------------------


def test_seq_ranges() -> None:
    assert seq_ranges([22, 17, 18, 19]) == "17-19, 22"
    assert seq_ranges([]) == ""
    assert seq_ranges([5]) == "5"
    assert seq_ranges([1, 3, 5, 7, 8, 9], limit=2) == "1, 3 (+4 more)"


def test_a_complete_delivery_exits_0_and_names_nothing() -> None:
    done = Delivery(planned=6, sent=6, learned=3, duplicates=1, refused=1, lost=1)
    assert done.complete and done.exit_status == 0 and done.missing_line() == ""
    assert done.summary_line() == (
        "answered 6 of 6 batch(es): 3 learned, 1 duplicate (learned before), 1 refused, "
        "1 lost in gaps"
    )


def test_an_incomplete_delivery_names_devices_and_seqs_truncated() -> None:
    unanswered = {f"node-{i:04d}": (17, 18, 19, 22) for i in range(3, 10)}
    delivery = Delivery(
        planned=30 + 30,
        sent=30 + 28,
        learned=30,
        unanswered=unanswered,
        unsent={"node-0001": (29, 30)},
    )
    assert delivery.exit_status == UNANSWERED_EXIT_STATUS == 3
    assert delivery.summary_line().endswith("; 28 unanswered; 2 never sent")
    assert delivery.missing_line() == (
        "28 batch(es) got no answer from their node and 2 were never sent: "
        "node-0001: never sent 29-30; node-0003: 17-19, 22; node-0004: 17-19, 22; "
        "node-0005: 17-19, 22; node-0006: 17-19, 22 (+3 more devices)"
    )
    assert delivery.to_dict()["unanswered"]["node-0003"] == [17, 18, 19, 22]
    with pytest.raises(ValueError, match="answered"):
        Delivery(planned=2, sent=2, learned=1)
    with pytest.raises(ValueError, match="planned"):
        Delivery(planned=3, sent=2, learned=2)


def test_the_default_drain_is_three_cadences_and_at_least_ten_seconds() -> None:
    assert default_drain_s(60.0, 1.0) == 180.0
    assert default_drain_s(60.0, 240.0) == MIN_DRAIN_S == 10.0
    assert default_drain_s(60.0, 6.0) == 30.0
    assert default_drain_s(60.0, None) == MIN_DRAIN_S


async def test_the_bridge_keeps_unanswered_payloads_within_its_budget() -> None:
    book = Outstanding(POLICY)
    published: list[tuple[str, bytes]] = []

    async def publish(where: str, payload: bytes) -> None:
        published.append((where, payload))

    kept = KeptBatches(book, publish, prefix="vega", limit_bytes=10)
    for seq in (1, 2, 3):
        book.sent(D, seq, 0.0)
        kept.keep(D, seq, bytes([seq]) * 4)  # 12 bytes > 10: seq 1 is abandoned
    assert kept.abandoned == 1 and kept.kept_bytes == 8
    assert book.resendable(D) == [2, 3] and book.unanswered() == {D: [1, 2, 3]}
    book.answered(D, 2, 1.0, in_order=True)
    await kept.publish_again(book.due(100.0), timed_out=True)
    assert published == [(f"vega/{D}/batch", b"\x03" * 4)] and kept.resent == 1
    assert kept.kept_bytes == 4  # seq 2's payload let go once answered
    await kept.publish_again({D: [1, 2, 3]}, timed_out=False)  # a reconnect: 3 only
    assert [p for _, p in published] == [b"\x03" * 4] * 2 and kept.republished == 1
