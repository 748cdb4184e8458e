"""ReplayMemory over real SQLite: AR1* counts, persistence, rollback, bytes, lr_size 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils

from device.node.store import ReplayConfigError, ReplayStateError
from device.node.store.replay import ReplayConfig, ReplayMemory

SHAPE = (4, 2, 2)  # D = 16


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite_utils.Database]:
    database = sqlite_utils.Database(tmp_path / "node.db")
    database.enable_wal()
    yield database
    database.close()


def batch(seed: int, n: int, label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, *SHAPE)).astype(np.float32)
    y = np.full(n, label) if label is not None else g.integers(0, 10, n)
    return x, y.astype(np.int64)


def event(mem: ReplayMemory, db: sqlite_utils.Database, seed: int, n: int, **kw: int) -> int:
    x, y = batch(seed, n, **kw)
    with db.atomic():
        return mem.update(x, y, np.random.default_rng(1000 + seed))


def open_mem(
    db: sqlite_utils.Database, lr_size: int = 60, bits: int = 8, **kw: bool
) -> ReplayMemory:
    return ReplayMemory.open(db, ReplayConfig(lr_size, bits, SHAPE, **kw))


def test_update_requires_the_callers_transaction(db: sqlite_utils.Database) -> None:
    mem = open_mem(db)
    x, y = batch(0, 5)
    with pytest.raises(ReplayStateError, match="inside the event's transaction"):
        mem.update(x, y, np.random.default_rng(0))
    assert mem.size == 0 and mem.updates == 0


def test_update_does_not_commit(db: sqlite_utils.Database, tmp_path: Path) -> None:
    mem = open_mem(db)
    x, y = batch(0, 5)
    db.execute("BEGIN")
    mem.update(x, y, np.random.default_rng(0))
    other = sqlite_utils.Database(tmp_path / "node.db")  # a second reader sees nothing yet
    assert other.execute("SELECT count(*) FROM replay").fetchone()[0] == 0
    db.conn.commit()
    assert other.execute("SELECT count(*) FROM replay").fetchone()[0] == 5
    other.close()


def test_after_event_i_exactly_h_slots_change(db: sqlite_utils.Database) -> None:
    mem = open_mem(db, lr_size=60)
    sizes = []
    for i in range(8):
        before, _ = mem.contents()
        moved = event(mem, db, seed=i, n=25)
        after, _ = mem.contents()
        sizes.append(mem.size)
        if len(before) == mem.lr_size:
            changed = int((before != after).any(axis=(1, 2, 3)).sum())
            assert changed == moved == min(60 // (i + 1), 25), i
    assert sizes == [25, 50, 60, 60, 60, 60, 60, 60]  # full as soon as 60 latents have come
    assert mem.updates == 8


def test_stored_values_are_the_new_latents_quantized(db: sqlite_utils.Database) -> None:
    mem = open_mem(db, lr_size=10, bits=8)
    x, y = batch(3, 10)
    with db.atomic():
        mem.update(x, y, np.random.default_rng(0))
    stored, labels = mem.contents()
    # every stored LR is one of the new ones, within half a step (range / 255 / 2)
    for s, lab in zip(stored, labels, strict=True):
        j = np.abs(x - s).reshape(10, -1).max(axis=1).argmin()
        assert y[j] == lab
        assert np.abs(x[j] - s).max() <= (x[j].max() - x[j].min()) / 255 / 2 + 1e-6
    assert len(labels) == 10


def test_persistence_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    db = sqlite_utils.Database(path)
    mem = open_mem(db, lr_size=30, bits=6)
    for i in range(4):
        event(mem, db, seed=i, n=20)
    before = (mem.contents(), mem.updates, mem.stats(), mem.class_counts())
    db.close()
    db2 = sqlite_utils.Database(path)
    mem2 = open_mem(db2, lr_size=30, bits=6)
    after = (mem2.contents(), mem2.updates, mem2.stats(), mem2.class_counts())
    np.testing.assert_array_equal(before[0][0], after[0][0])
    np.testing.assert_array_equal(before[0][1], after[0][1])
    assert before[1:] == after[1:]
    db2.close()


def test_rolled_back_update_leaves_db_and_mirror_as_committed(db: sqlite_utils.Database) -> None:
    mem = open_mem(db, lr_size=30)
    event(mem, db, seed=0, n=30)
    before = mem.contents()
    rows = list(db.query("SELECT * FROM replay ORDER BY slot"))
    with pytest.raises(RuntimeError, match="boom"), db.atomic():
        mem.update(*batch(1, 30), np.random.default_rng(1))
        raise RuntimeError("boom")
    mem.reload()
    assert list(db.query("SELECT * FROM replay ORDER BY slot")) == rows
    np.testing.assert_array_equal(mem.contents()[0], before[0])
    assert mem.updates == 1


def test_same_generators_same_memory(tmp_path: Path) -> None:
    contents = []
    for name in ("a.db", "b.db"):
        db = sqlite_utils.Database(tmp_path / name)
        mem = open_mem(db, lr_size=40, class_balanced=True)
        for i in range(5):
            event(mem, db, seed=i, n=17)
        contents.append(mem.contents())
        db.close()
    np.testing.assert_array_equal(contents[0][0], contents[1][0])
    np.testing.assert_array_equal(contents[0][1], contents[1][1])


def test_class_balanced_memory_stays_balanced(db: sqlite_utils.Database) -> None:
    mem = open_mem(db, lr_size=90, class_balanced=True)
    for i in range(6):
        event(mem, db, seed=i, n=50, label=i)
        counts = list(mem.class_counts().values())
        assert max(counts) - min(counts) <= 1, mem.class_counts()
    assert sum(mem.class_counts().values()) == 90


@pytest.mark.parametrize("low", [7, 6, 4])
def test_bytes_scale_with_bits(tmp_path: Path, low: int) -> None:
    totals = {}
    for bits in (8, low):
        db = sqlite_utils.Database(tmp_path / f"{bits}.db")
        mem = open_mem(db, lr_size=20, bits=bits)
        event(mem, db, seed=0, n=20)
        code_bytes = db.execute("SELECT sum(length(codes)) FROM replay").fetchone()[0]
        assert mem.bytes == code_bytes + 20 * 8
        assert mem.stats() == {"size": 20, "capacity": 20, "bits": bits, "bytes": mem.bytes}
        totals[bits] = code_bytes
        db.close()
    assert totals[low] * 8 == totals[8] * low  # D = 16, a multiple of 8


def test_fp32_memory_is_lossless(db: sqlite_utils.Database) -> None:
    mem = open_mem(db, lr_size=8, bits=32)
    x, y = batch(0, 8)
    with db.atomic():
        mem.update(x, y, np.random.default_rng(0))
    stored, _ = mem.contents()
    assert mem.bytes == 8 * 16 * 4
    for s in stored:
        assert (np.abs(x - s).reshape(8, -1).max(axis=1) == 0).any()


def test_lr_size_zero_is_the_no_replay_baseline(db: sqlite_utils.Database) -> None:
    mem = open_mem(db, lr_size=0)
    assert event(mem, db, seed=0, n=21) == 0
    assert mem.size == 0 and mem.updates == 1 and mem.bytes == 0
    assert mem.class_counts() == {}
    x, y = mem.sample(0, np.random.default_rng(0))
    assert x.shape == (0, *SHAPE) and x.dtype == np.float32 and y.shape == (0,)
    with pytest.raises(ReplayStateError, match="empty"):
        mem.sample(1, np.random.default_rng(0))


def test_sampling_without_then_with_replacement(db: sqlite_utils.Database) -> None:
    mem = open_mem(db, lr_size=12)
    x = np.random.default_rng(0).normal(size=(12, *SHAPE)).astype(np.float32)
    with db.atomic():
        mem.update(x, np.arange(12), np.random.default_rng(0))
    xs, ys = mem.sample(12, np.random.default_rng(5))
    assert sorted(ys.tolist()) == list(range(12))
    assert xs.shape == (12, *SHAPE) and ys.dtype == np.int64
    _, ys = mem.sample(40, np.random.default_rng(5))
    assert len(ys) == 40 and len(set(ys.tolist())) <= 12
    a = mem.sample(5, np.random.default_rng(9))
    b = mem.sample(5, np.random.default_rng(9))
    np.testing.assert_array_equal(a[0], b[0])


def test_reopening_with_other_settings_is_refused(db: sqlite_utils.Database) -> None:
    open_mem(db, lr_size=60, bits=8)
    with pytest.raises(ReplayConfigError, match=r"\(60, 8, \(4, 2, 2\)\).*\(60, 7, \(4, 2, 2\)\)"):
        open_mem(db, lr_size=60, bits=7)


@pytest.mark.parametrize(
    ("lr_size", "bits", "shape", "match"),
    [
        (-1, 8, (4,), "lr_size"),
        (10, 3, (4,), "bits"),
        (10, 8, (), "shape"),
        (10, 8, (0,), "shape"),
    ],
)
def test_config_is_checked(lr_size: int, bits: int, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ReplayConfigError, match=match):
        ReplayConfig(lr_size, bits, shape)


def test_bad_batches_are_rejected_before_writing(db: sqlite_utils.Database) -> None:
    mem = open_mem(db)
    x, y = batch(0, 4)
    with db.atomic():
        with pytest.raises(ValueError, match="latents must be"):
            mem.update(x[:, :2], y, np.random.default_rng(0))
        with pytest.raises(ValueError, match="labels must be"):
            mem.update(x, y[:3], np.random.default_rng(0))
        x[0, 0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="finite"):
            mem.update(x, y, np.random.default_rng(0))
    assert mem.size == 0 and mem.updates == 0


def test_paper_sized_memory_samples_minibatches(db: sqlite_utils.Database) -> None:
    """1500 LRs of D=1024 at 8 bits; one event's worth of replay mini-batches (timed in docs)."""
    cfg = ReplayConfig(1500, 8, (1024,))
    mem = ReplayMemory.open(db, cfg)
    g = np.random.default_rng(0)
    with db.atomic():
        mem.update(g.random((1500, 1024), dtype=np.float32), g.integers(0, 10, 1500), g)
    assert mem.stats() == {"size": 1500, "capacity": 1500, "bits": 8, "bytes": 1500 * 1032}
    for _ in range(15):
        xs, ys = mem.sample(107, g)
        assert xs.shape == (107, 1024) and ys.shape == (107,)
