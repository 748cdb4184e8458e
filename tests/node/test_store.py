"""NodeStore on real SQLite files: persistence, all-or-nothing events, ownership checks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.node.store import (
    EventRecord,
    ModelMismatchError,
    NodeState,
    NodeStore,
    StoreCorruptError,
    StoreError,
)
from device.node.store.replay import ReplayConfig
from device.node.store.snapshots import BatterySnapshot, EnergyTotals

CFG = ReplayConfig(lr_size=40, bits=7, shape=(16,))


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read through a separate connection."""
    conn = sqlite3.connect(path)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = {n: conn.execute(f"SELECT * FROM [{n}] ORDER BY rowid").fetchall() for n in names}
    conn.close()
    return out


def weights(seed: int) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {
        "fc.weight": g.normal(size=(10, 16)).astype(np.float32),
        "fc.bias": g.normal(size=10).astype(np.float32),
        "fc.weight.momentum": g.normal(size=(10, 16)).astype(np.float32),
        "step": np.array(seed, dtype=np.int64),
    }


def run_event(store: NodeStore, seq: int, *, fail: bool = False) -> None:
    memory = store.replay
    assert memory is not None
    g = np.random.default_rng(seq)
    with store.event_transaction() as tx:
        tx.save_weights(weights(seq))
        memory.update(g.normal(size=(21, 16)).astype(np.float32), g.integers(0, 5, 21), g)
        prev = store.state()
        tx.set_state(
            NodeState(
                last_seq=seq,
                events_applied=prev.events_applied + 1,
                sim_time=1.7e9 + 60 * seq,
                battery=BatterySnapshot(39204.0, 39204.0 - seq, 1.7e-6, float(seq)),
                energy_totals=EnergyTotals(total_j=0.5 * seq),
                last_latency_s=0.25 * seq,
            )
        )
        tx.log_event(EventRecord(seq, 1.7e9 + 60 * seq, 21, 0.5, {"total": 0.5}, host_s=0.01))
        if fail:
            raise RuntimeError("killed mid-event")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    s = NodeStore.open(tmp_path, "node-0001", "mnv1-int8@abc", config={"lr_bits": 7})
    s.open_replay(CFG)
    yield s
    s.close()


def test_fresh_store(store: NodeStore, tmp_path: Path) -> None:
    assert store.path == tmp_path / "node-0001.db"
    assert store.state() == NodeState()
    assert store.load_weights() is None
    assert store.events() == []
    assert store.meta.model_id == "mnv1-int8@abc" and store.meta.config == {"lr_bits": 7}
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_persistence_across_close_and_reopen(store: NodeStore, tmp_path: Path) -> None:
    for seq in range(3):
        run_event(store, seq)
    mem = store.replay
    assert mem is not None
    w, s, ev, lr = store.load_weights(), store.state(), store.events(), mem.contents()
    store.close()
    with NodeStore.open(tmp_path, "node-0001", "mnv1-int8@abc") as again:
        mem2 = again.open_replay(CFG)
        w2 = again.load_weights()
        assert w is not None and w2 is not None and w.keys() == w2.keys()
        for k in w:
            assert w2[k].dtype == w[k].dtype and w2[k].shape == w[k].shape
            np.testing.assert_array_equal(w2[k], w[k])
            assert w2[k].flags.writeable
        assert again.state() == s and s.last_seq == 2 and s.events_applied == 3
        assert again.events() == ev and [e.seq for e in ev] == [0, 1, 2]
        np.testing.assert_array_equal(mem2.contents()[0], lr[0])
        np.testing.assert_array_equal(mem2.contents()[1], lr[1])
        assert mem2.updates == 3 and again.meta.config == {"lr_bits": 7}


def test_failed_event_changes_nothing(store: NodeStore) -> None:
    run_event(store, 0)
    mem = store.replay
    assert mem is not None
    before, lr = dump(store.path), mem.contents()
    file_bytes = store.path.read_bytes()
    with pytest.raises(RuntimeError, match="killed mid-event"):
        run_event(store, 1, fail=True)
    assert dump(store.path) == before
    assert store.path.read_bytes() == file_bytes
    np.testing.assert_array_equal(mem.contents()[0], lr[0])  # the mirror was reloaded
    assert mem.updates == 1 and store.state().last_seq == 0
    run_event(store, 1)  # and the store is usable afterwards
    assert store.state().last_seq == 1
    store.close()


def test_a_seq_is_never_logged_twice(store: NodeStore) -> None:
    run_event(store, 5)
    before = dump(store.path)
    with pytest.raises(StoreError, match="seq 5 is already in the event log"):
        run_event(store, 5)
    assert dump(store.path) == before
    store.close()


def test_transaction_objects_do_not_outlive_their_block(store: NodeStore) -> None:
    with store.event_transaction() as tx:
        pass
    with pytest.raises(StoreError, match="finished"):
        tx.save_weights({"w": np.zeros(3)})
    with (
        store.event_transaction(),
        pytest.raises(StoreError, match="already open"),
        store.event_transaction(),
    ):
        pass
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.state()


def test_save_weights_replaces_the_snapshot(store: NodeStore) -> None:
    with store.event_transaction() as tx:
        tx.save_weights({"a": np.ones(3, np.float32), "b": np.zeros((2, 2))})
    with store.event_transaction() as tx:
        tx.save_weights({"a": np.arange(4, dtype=">f4")})  # big-endian in, native out
    w = store.load_weights()
    assert w is not None and list(w) == ["a"]
    assert w["a"].dtype == np.float32 and w["a"].tolist() == [0, 1, 2, 3]
    with store.event_transaction() as tx, pytest.raises(ValueError, match="numeric"):
        tx.save_weights({"bad": np.array(["x"])})
    store.close()


def test_other_model_is_refused_naming_both(store: NodeStore, tmp_path: Path) -> None:
    store.close()
    with pytest.raises(ModelMismatchError, match=r"'mnv1-int8@abc'.*'other-model'"):
        NodeStore.open(tmp_path, "node-0001", "other-model")


def test_other_replay_settings_are_refused(store: NodeStore, tmp_path: Path) -> None:
    store.close()
    with (
        NodeStore.open(tmp_path, "node-0001", "mnv1-int8@abc") as again,
        pytest.raises(ValueError, match="lr_size, bits, shape"),
    ):
        again.open_replay(ReplayConfig(40, 8, (16,)))


def test_not_a_state_file(tmp_path: Path) -> None:
    (tmp_path / "node-9.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreCorruptError, match="not a usable"):
        NodeStore.open(tmp_path, "node-9", "m")


@pytest.mark.parametrize("device_id", ["../etc", "a/b", "", "x" * 65, "node 1"])
def test_device_id_must_be_a_safe_file_name(tmp_path: Path, device_id: str) -> None:
    with pytest.raises(ValueError, match="device id"):
        NodeStore.open(tmp_path, device_id, "m")


def test_lr_size_zero_store(tmp_path: Path) -> None:
    with NodeStore.open(tmp_path, "n0", "m", synchronous="NORMAL") as s:
        mem = s.open_replay(ReplayConfig(0, 8, (16,)))
        with s.event_transaction():
            mem.update(
                np.zeros((3, 16), np.float32), np.zeros(3, np.int64), np.random.default_rng()
            )
        assert mem.stats() == {"size": 0, "capacity": 0, "bits": 8, "bytes": 0}
        assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_worker_thread_use(store: NodeStore) -> None:
    errors: list[Exception] = []

    def work() -> None:
        try:
            run_event(store, 0)
        except Exception as exc:  # reported by the assert below
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert not errors and store.state().last_seq == 0
    store.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"last_seq": -1}, "last_seq"),
        ({"events_applied": True}, "events_applied"),
        ({"sim_time": float("nan")}, "sim_time"),
        ({"last_latency_s": -1.0}, "last_latency_s"),
        ({"battery": {"soc": 1.0}}, "battery must be BatterySnapshot or None"),
        ({"energy_totals": {"total": 1.0}}, "energy_totals must be EnergyTotals,"),
        ({"lifetime": 3.0}, "lifetime must be LifetimeSnapshot or None"),
    ],
)
def test_node_state_is_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NodeState(**kwargs)


def test_node_state_is_read_only() -> None:
    s = NodeState(battery=BatterySnapshot(10.0, 9.0, 0.0, 1.0))
    with pytest.raises(AttributeError):
        s.battery = None  # type: ignore[misc]
    assert s.battery is not None
    with pytest.raises(AttributeError):
        s.battery.remaining_j = 0.0  # type: ignore[misc]


KILLED_CHILD = """
import os, sys
import numpy as np
from device.node.store.replay import ReplayConfig
from device.node.store import EventRecord, NodeState, NodeStore

store = NodeStore.open(sys.argv[1], "node-0001", "mnv1-int8@abc")
memory = store.open_replay(ReplayConfig(lr_size=40, bits=7, shape=(16,)))
g = np.random.default_rng(1)
with store.event_transaction() as tx:
    tx.save_weights({"fc.weight": np.full((10, 16), 9.0, np.float32)})
    memory.update(g.normal(size=(21, 16)).astype(np.float32), g.integers(0, 5, 21), g)
    tx.set_state(NodeState(last_seq=1, events_applied=2))
    tx.log_event(EventRecord(1, 0.0, 21, None, {}, 0.0))
    os._exit(3)  # killed before the commit
"""


def test_process_killed_mid_event_reopens_at_the_last_commit(
    store: NodeStore, tmp_path: Path
) -> None:
    run_event(store, 0)
    mem = store.replay
    assert mem is not None
    before, lr = dump(store.path), mem.contents()
    store.close()
    child = subprocess.run([sys.executable, "-c", KILLED_CHILD, str(tmp_path)], check=False)
    assert child.returncode == 3
    with NodeStore.open(tmp_path, "node-0001", "mnv1-int8@abc") as again:
        mem2 = again.open_replay(CFG)
        assert dump(again.path) == before
        assert again.state().last_seq == 0 and mem2.updates == 1
        np.testing.assert_array_equal(mem2.contents()[0], lr[0])


def test_a_replay_write_the_disk_refuses_is_a_store_error_and_retried(store: NodeStore) -> None:
    """SQLite refusing the replay table's write (here: a query-only connection, as a full disk or
    an I/O error would) is a StoreError -- the node keeps the batch and retries -- never a plain
    replay error, which the node would take for a bad event and skip."""
    run_event(store, 0)
    mem = store.replay
    assert mem is not None
    before, lr = dump(store.path), mem.contents()
    g = np.random.default_rng(1)
    store.db.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError, match="replay memory"), store.event_transaction():
        mem.update(g.normal(size=(21, 16)).astype(np.float32), g.integers(0, 5, 21), g)
    store.db.execute("PRAGMA query_only = OFF")
    assert dump(store.path) == before and mem.updates == 1
    np.testing.assert_array_equal(mem.contents()[0], lr[0])  # the mirror holds the last commit
    run_event(store, 1)  # the retry goes through
    assert store.state().last_seq == 1 and mem.updates == 2
    store.close()
