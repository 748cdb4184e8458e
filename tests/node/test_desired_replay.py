"""A desired state's replay settings over real SQLite: the memory re-quantized and resized in
place (``ReplayMemory.reconfigure``), committed with the caller, rolled back with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils

from device.learning.replay.quant import dequantize, quantize
from device.node.store.replay import ReplayConfig, ReplayMemory

SHAPE = (4, 2, 2)  # D = 16


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite_utils.Database]:
    database = sqlite_utils.Database(tmp_path / "node.db")
    database.enable_wal()
    yield database
    database.close()


def filled(db: sqlite_utils.Database, labels: list[int], *, balanced: bool) -> ReplayMemory:
    """A memory of len(labels) LRs, exactly those labels (one event fills an empty memory)."""
    mem = ReplayMemory.open(db, ReplayConfig(len(labels), 8, SHAPE, class_balanced=balanced))
    x = np.random.default_rng(0).normal(size=(len(labels), *SHAPE)).astype(np.float32)
    with db.atomic():
        mem.update(x, np.array(labels, dtype=np.int64), np.random.default_rng(1))
    assert mem.size == len(labels)
    return mem


def test_fewer_bits_re_encode_every_lr_in_place(db: sqlite_utils.Database) -> None:
    mem = filled(db, [0, 1, 2, 3] * 10, balanced=False)
    before, labels = mem.contents()
    with db.atomic():
        mem.reconfigure(40, 6, np.random.default_rng(0))
    after, labels_after = mem.contents()
    assert (mem.bits, mem.size, mem.lr_size) == (6, 40, 40)
    np.testing.assert_array_equal(labels_after, labels)
    # each LR is its 8-bit value encoded again with 6 bits
    expected = dequantize(quantize(before.reshape(40, -1), 6)).reshape(before.shape)
    np.testing.assert_allclose(after, expected, rtol=0, atol=1e-6)
    assert mem.bytes < 40 * (16 + 8)  # 12 code bytes + 8 of scale and zero point each
    again = ReplayMemory.open(db, ReplayConfig(40, 6, SHAPE))  # what a restart reads
    np.testing.assert_array_equal(again.contents()[0], after)


def test_a_smaller_memory_drops_from_the_largest_classes_when_balanced(
    db: sqlite_utils.Database,
) -> None:
    mem = filled(db, [0] * 30 + [1] * 6 + [2] * 4, balanced=True)
    with db.atomic():
        mem.reconfigure(12, 8, np.random.default_rng(3))
    assert mem.class_counts() == {0: 4, 1: 4, 2: 4}
    with db.atomic():  # growing keeps every LR
        mem.reconfigure(100, 8, np.random.default_rng(4))
    assert mem.size == 12 and mem.lr_size == 100


def test_a_rolled_back_reconfigure_leaves_the_memory_as_it_was(db: sqlite_utils.Database) -> None:
    mem = filled(db, [0, 1] * 10, balanced=False)
    before = mem.contents()
    with pytest.raises(RuntimeError), db.atomic():
        mem.reconfigure(5, 4, np.random.default_rng(0))
        raise RuntimeError("the event failed")
    mem.reload()  # what the node's store does after a rollback
    assert (mem.lr_size, mem.bits, mem.size) == (20, 8, 20)
    np.testing.assert_array_equal(mem.contents()[0], before[0])


def test_a_memory_of_no_replays_and_back(db: sqlite_utils.Database) -> None:
    mem = filled(db, [0, 1] * 5, balanced=False)
    with db.atomic():
        mem.reconfigure(0, 4, np.random.default_rng(0))
    assert (mem.size, mem.lr_size, mem.bits, mem.bytes) == (0, 0, 4, 0)
    with db.atomic():
        mem.reconfigure(30, 32, np.random.default_rng(1))
    assert (mem.size, mem.lr_size, mem.bits) == (0, 30, 32)
