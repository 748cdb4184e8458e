"""Prequential (test-then-train) accuracy: predictions scored when their labels arrive.

The standard metric of streaming learning: each sample is first predicted (an inference
request), and when its label arrives later (in a learning batch) the prediction is scored, before
the node learns from that label. Samples are told apart by their wire ``ids``. Pure: no I/O.

Scoring is split in two so that a node can commit it with the event it belongs to:
:meth:`PrequentialScore.tally` computes the scores of a batch without changing anything;
:meth:`PrequentialScore.apply` adds them and forgets the scored ids, once the event is committed.
A batch that fails to commit and comes again is therefore never scored twice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

#: Predictions remembered, by sample id; the oldest are forgotten first (never scored).
DEFAULT_CAPACITY: Final = 4096

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ScoreTally:
    """The scores of one batch: ``right`` of ``n`` remembered predictions, for sample ``ids``."""

    right: int
    n: int
    ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.right <= self.n or self.n != len(self.ids):
            raise ValueError(f"tally of {self.right} right of {self.n} for {len(self.ids)} ids")


NO_TALLY: Final = ScoreTally(0, 0, ())


class PrequentialScore:
    """Cumulative prequential accuracy over the predictions scored so far.

    ``predicted(ids, classes)`` remembers what was predicted for each id (a later prediction of
    the same id replaces the earlier one); at most ``capacity`` ids are remembered.
    ``right`` and ``n`` start from a node's committed counts.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, right: int = 0, n: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        if not 0 <= right <= n:
            raise ValueError(f"prequential counts must satisfy 0 <= right <= n: {right}, {n}")
        self.capacity = capacity
        self.right = right
        self.n = n
        self._pending: OrderedDict[int, int] = OrderedDict()

    @property
    def accuracy(self) -> float | None:
        """``right / n``; None before the first scored prediction."""
        return self.right / self.n if self.n else None

    @property
    def pending(self) -> int:
        """Predictions remembered and not scored yet."""
        return len(self._pending)

    def predicted(self, ids: I64, classes: I64) -> None:
        """Remember ``classes[i]`` as the prediction for sample ``ids[i]``."""
        if len(ids) != len(classes):
            raise ValueError(f"{len(ids)} ids for {len(classes)} predicted classes")
        for sample, cls in zip(ids.tolist(), classes.tolist(), strict=True):
            self._pending[sample] = cls
            self._pending.move_to_end(sample)
        while len(self._pending) > self.capacity:
            self._pending.popitem(last=False)

    def tally(self, ids: I64 | None, labels: I64) -> ScoreTally:
        """Score the remembered predictions of the samples ``ids`` against ``labels``; changes
        nothing (see :meth:`apply`). Samples never predicted (or forgotten) are not scored."""
        if ids is None:
            return NO_TALLY
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} ids for {len(labels)} labels")
        right, scored = 0, []
        for sample, label in zip(ids.tolist(), labels.tolist(), strict=True):
            guess = self._pending.get(sample)
            if guess is not None:
                scored.append(sample)
                right += guess == label
        return ScoreTally(right, len(scored), tuple(scored))

    def apply(self, tally: ScoreTally) -> None:
        """Count ``tally`` and forget the predictions it scored (each is scored once)."""
        self.right += tally.right
        self.n += tally.n
        for sample in tally.ids:
            self._pending.pop(sample, None)


__all__ = ["DEFAULT_CAPACITY", "NO_TALLY", "PrequentialScore", "ScoreTally"]
