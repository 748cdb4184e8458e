"""The event log stays bounded however long a node runs, and still tells a handled seq from a
skipped one after its oldest rows are pruned (a producer re-sending from far back)."""

from __future__ import annotations

from pathlib import Path

from device.node.store import NodeStore
from device.node.store.records import EventRecord
from device.node.store.transaction import EVENT_LOG_KEEP

FIRST_SEQ = 5  # a node that started on a stream already under way
GAP = (300, 309)  # never arrived, given up


def log(store: NodeStore, seq: int) -> None:
    with store.event_transaction(durable=False) as tx:
        tx.log_event(EventRecord(seq, 1.7e9 + 60 * seq, 21, 0.5, {"total": 0.5}, host_s=0.01))


def test_the_log_keeps_its_most_recent_rows_and_still_knows_what_was_handled(
    tmp_path: Path,
) -> None:
    last = FIRST_SEQ + 3 * EVENT_LOG_KEEP
    with NodeStore.open(tmp_path, "node-0001", "m@1") as store:
        seq = FIRST_SEQ
        while seq <= last:
            if seq == GAP[0]:
                with store.event_transaction(durable=False) as tx:
                    tx.log_gap(*GAP)
                seq = GAP[1] + 1
                continue
            log(store, seq)
            seq += 1
        kept = [e.seq for e in store.events()]
        assert EVENT_LOG_KEEP <= len(kept) <= EVENT_LOG_KEEP + 100
        assert kept == list(range(last - len(kept) + 1, last + 1))  # the most recent, in order
        pruned = [FIRST_SEQ, 100, GAP[0] - 1, GAP[1] + 1, kept[0] - 1]
        assert all(store.has_event(s) for s in pruned), "pruned but handled: a duplicate"
        assert not any(store.has_event(s) for s in range(GAP[0], GAP[1] + 1)), "skipped: stale"
        assert not store.has_event(FIRST_SEQ - 1), "before the node's first seq: never handled"
        assert not store.has_event(last + 1)
    with NodeStore.open(tmp_path, "node-0001", "m@1") as again:  # all of it on disk
        assert [e.seq for e in again.events()] == kept
        assert again.has_event(100) and not again.has_event(GAP[0])


def test_a_short_log_is_not_pruned(tmp_path: Path) -> None:
    with NodeStore.open(tmp_path, "node-0001", "m@1") as store:
        for seq in range(1, EVENT_LOG_KEEP + 2):
            log(store, seq)
        assert len(store.events()) == EVENT_LOG_KEEP + 1
        assert not store.has_event(0)
