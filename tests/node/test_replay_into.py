"""Replays dequantized straight into a mini-batch: the same draws and the same values.

:meth:`ReplayMemory.sample_into` is what the engine's training loop uses (through
``train_event(replay_into=...)``); it must take exactly the random draws of
:meth:`ReplayMemory.sample` and write exactly its values, at every bit width, and a training
event run with it must leave the head bit for bit where the plain sampler leaves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils

from device.learning.learner import TrainConfig, train_event
from device.learning.nn import SGD, Linear, ReLU, Sequential
from device.learning.nn.dense import Flatten
from device.learning.replay.quant import dequantize_rows, quantize
from device.node.store.replay import ReplayConfig, ReplayMemory

SHAPE = (4, 2, 2)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite_utils.Database]:
    database = sqlite_utils.Database(tmp_path / "node.db")
    yield database
    database.close()


def _filled(db: sqlite_utils.Database, bits: int, lr_size: int = 50) -> ReplayMemory:
    mem = ReplayMemory.open(db, ReplayConfig(lr_size, bits, SHAPE))
    g = np.random.default_rng(bits)
    with db.atomic():
        x = (g.normal(size=(lr_size, *SHAPE)) * 3).astype(np.float32)
        mem.update(x, g.integers(0, 10, lr_size), g)
    return mem


@pytest.mark.parametrize("bits", [32, 8, 7, 4])
@pytest.mark.parametrize("n", [0, 1, 17, 50, 80])  # 80 > size: with replacement
def test_sample_into_is_sample(db: sqlite_utils.Database, bits: int, n: int) -> None:
    mem = _filled(db, bits)
    want_x, want_y = mem.sample(n, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    buf = np.full((n + 5, *SHAPE), np.nan, np.float32)
    got_y = mem.sample_into(n, rng, buf[5:])
    np.testing.assert_array_equal(buf[5:], want_x)
    assert np.isnan(buf[:5]).all()  # nothing written outside out
    np.testing.assert_array_equal(got_y, want_y)
    assert got_y.dtype == np.int64
    # the same draws: both generators continue identically
    after = np.random.default_rng(3)
    mem.sample(n, after)
    assert rng.integers(1 << 30) == after.integers(1 << 30)


def test_sample_into_refuses_a_wrong_buffer(db: sqlite_utils.Database) -> None:
    mem = _filled(db, 8)
    g = np.random.default_rng(0)
    for bad in (
        np.zeros((3, *SHAPE), np.float64),
        np.zeros((4, *SHAPE), np.float32),
        np.zeros((3, 16), np.float32),
        np.zeros((3, 4, 2, 4), np.float32)[..., ::2],
    ):
        with pytest.raises(ValueError, match="out must be"):
            mem.sample_into(3, g, bad)


@pytest.mark.parametrize("bits", [32, 8, 6])
def test_dequantize_rows_into_out(bits: int) -> None:
    x = np.random.default_rng(1).normal(size=(9, 16)).astype(np.float32)
    q = quantize(x, bits)
    want = dequantize_rows(q.packed, q.scale, q.zero_point, bits, 16)
    out = np.empty((9, 16), np.float32)
    got = dequantize_rows(q.packed, q.scale, q.zero_point, bits, 16, out)
    assert got is out
    np.testing.assert_array_equal(got, want)


def test_training_with_replay_into_is_bitwise_the_plain_one(db: sqlite_utils.Database) -> None:
    mem = _filled(db, 8, lr_size=200)

    def run(into: bool) -> dict[str, np.ndarray]:
        g = np.random.default_rng(11)
        head = Sequential(
            [Flatten(name="f"), Linear(16, 12, name="a", rng=g), ReLU(name="r"),
             Linear(12, 10, name="b", rng=g)]
        )  # fmt: skip
        opt = SGD()
        data = np.random.default_rng(5)
        for event in range(3):
            latents = data.normal(size=(45, *SHAPE)).astype(np.float32)
            labels = data.integers(0, 10, 45)
            train_event(
                head,
                opt,
                latents,
                labels,
                replay=mem.sample,
                n_replay=mem.size,
                config=TrainConfig(epochs=2, mb_size=32, new_per_mb=7),
                rng=np.random.default_rng(event),
                replay_into=mem.sample_into if into else None,
            )
        return {k: v.copy() for k, v in head.params().items()}

    plain, fast = run(False), run(True)
    for key, value in plain.items():
        np.testing.assert_array_equal(fast[key], value, err_msg=key)
