"""Prequential (test-then-train) accuracy on hand-built sequences, and the inference counters."""

from __future__ import annotations

import numpy as np
import pytest

from device.learning.inference import InferenceCounters
from device.learning.prequential import NO_TALLY, PrequentialScore, ScoreTally


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_hand_built_sequence() -> None:
    score = PrequentialScore(capacity=4)
    assert score.accuracy is None and score.n == 0
    score.predicted(ids(10, 11, 12), ids(1, 2, 3))
    # a batch with the labels of 10 and 12 (right, wrong) and of 99 (never predicted)
    tally = score.tally(ids(10, 99, 12), ids(1, 5, 0))
    assert tally == ScoreTally(right=1, n=2, ids=(10, 12))
    assert score.n == 0 and score.pending == 3  # tally changes nothing ...
    score.apply(tally)  # ... apply counts it and forgets what it scored
    assert (score.right, score.n, score.accuracy, score.pending) == (1, 2, 0.5, 1)
    # a scored id is scored once: the same batch again scores nothing
    assert score.tally(ids(10, 99, 12), ids(1, 5, 0)) == NO_TALLY
    # a later prediction of the same id replaces the earlier one
    score.predicted(ids(11), ids(7))
    score.apply(score.tally(ids(11), ids(7)))
    assert (score.right, score.n) == (2, 3)
    # only `capacity` predictions are remembered, the oldest forgotten first
    score.predicted(ids(1, 2, 3, 4, 5), ids(0, 0, 0, 0, 0))
    assert score.pending == 4
    score.apply(score.tally(ids(1, 2, 3, 4, 5), ids(0, 0, 0, 0, 1)))
    assert (score.right, score.n) == (5, 7)
    assert score.accuracy == pytest.approx(5 / 7)
    # a batch without ids scores nothing
    assert score.tally(None, ids(1, 2)) == NO_TALLY


def test_counts_restart_from_committed_values_and_are_checked() -> None:
    score = PrequentialScore(right=3, n=4)
    assert score.accuracy == 0.75
    with pytest.raises(ValueError, match="right <= n"):
        PrequentialScore(right=5, n=4)
    with pytest.raises(ValueError, match="labels"):
        score.tally(ids(1, 2), ids(1))
    with pytest.raises(ValueError, match="tally"):
        ScoreTally(right=2, n=1, ids=(1,))


def test_inference_counters() -> None:
    counters = InferenceCounters().charged(0.5, 0.01).charged(0.25, 0.02)
    assert (counters.count, counters.since_count) == (2, 2)
    assert counters.energy_j == counters.since_energy_j == 0.75
    assert counters.since_latency_s == pytest.approx(0.03)
    after = counters.reported(right=1, n=2)
    assert (after.count, after.energy_j, after.since_count, after.since_energy_j) == (2, 0.75, 0, 0)
    assert (after.preq_right, after.preq_n) == (1, 2)
    assert InferenceCounters.from_dict(after.to_dict() | {"future": 1}) == after
    with pytest.raises(ValueError, match="preq_right"):
        InferenceCounters(preq_right=2, preq_n=1)
