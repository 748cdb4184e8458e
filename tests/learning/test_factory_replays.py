"""Factory replays fitted to a memory: class-balanced subsets and re-quantization."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.learning.replay import (
    FactoryReplays,
    QuantizationError,
    balanced_counts,
    balanced_pick,
    dequantize,
    quantize,
    requantize,
)


@given(
    available=st.lists(st.integers(0, 60), min_size=1, max_size=12),
    size=st.integers(0, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_balanced_counts_are_as_equal_as_the_data_allows(
    available: list[int], size: int, seed: int
) -> None:
    counts = balanced_counts(available, size, np.random.default_rng(seed))
    avail = np.array(available)
    assert counts.sum() == min(size, avail.sum())
    assert (counts >= 0).all() and (counts <= avail).all()
    # a class below another by two or more has nothing left to give
    short = counts < counts.max() - 1
    assert (counts[short] == avail[short]).all()


def test_balanced_pick_takes_every_class_alike() -> None:
    labels = np.array([0] * 50 + [3] * 10 + [7] * 40)
    rng = np.random.default_rng(0)
    pick = balanced_pick(labels, 60, rng)
    assert len(np.unique(pick)) == 60
    assert dict(zip(*np.unique(labels[pick], return_counts=True), strict=True)) == {
        0: 25,
        3: 10,
        7: 25,
    }
    assert len(balanced_pick(labels, 1000, rng)) == 100  # all of them when they fit


def _replays(n_per_class: int = 40, bits: int = 8) -> tuple[FactoryReplays, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3 * n_per_class, 2, 4, 4)).astype(np.float32)
    y = np.repeat(np.array([0, 4, 5], np.int64), n_per_class)
    return FactoryReplays(quantize(x.reshape(len(x), -1), bits), y, (2, 4, 4)), x


def test_fit_subsamples_class_balanced_and_requantizes() -> None:
    replays, x = _replays()
    fitted = replays.fit(31, 6, np.random.default_rng(0))
    assert len(fitted) == 31 and fitted.bits == 6 and fitted.shape == (2, 4, 4)
    assert sorted(fitted.class_counts().values()) == [10, 10, 11]
    # each kept LR is its original within the two quantization steps it went through
    rows = [int(np.flatnonzero((dequantize(replays.lrs) == r).all(axis=1))[0]) for r in
            dequantize(replays.fit(31, 8, np.random.default_rng(0)).lrs)]  # fmt: skip
    assert fitted.labels.tolist() == replays.labels[rows].tolist()
    flat = x.reshape(len(x), -1)[rows]
    span = flat.max(axis=1) - flat.min(axis=1)
    error = np.abs(dequantize(fitted.lrs) - flat).max(axis=1)
    assert (error <= span / 255 / 2 + span / 63 / 2 + 1e-5).all()


def test_fit_keeps_everything_that_fits_and_widens_losslessly() -> None:
    replays, _ = _replays()
    same = replays.fit(1500, 8, np.random.default_rng(0))
    assert same.lrs is replays.lrs and len(same) == 120
    wide = replays.fit(1500, 32, np.random.default_rng(0))
    assert wide.bits == 32
    np.testing.assert_array_equal(dequantize(wide.lrs), dequantize(replays.lrs))
    assert requantize(replays.lrs, 8) is replays.lrs
    assert len(replays.fit(0, 8, np.random.default_rng(0))) == 0


def test_factory_replays_are_checked() -> None:
    replays, _ = _replays()
    with pytest.raises(QuantizationError, match="one per LR"):
        FactoryReplays(replays.lrs, replays.labels[:-1], (2, 4, 4))
    with pytest.raises(QuantizationError, match="does not hold"):
        FactoryReplays(replays.lrs, replays.labels, (2, 4, 5))
    with pytest.raises(QuantizationError, match="int64"):
        FactoryReplays(replays.lrs, replays.labels.astype(np.int32), (2, 4, 4))
