"""AR1* replacement policy of the latent-replay memory: which new latents go to which slots.

Pure numpy: counts and labels in, a :class:`SlotPlacement` out; all randomness from the
``np.random.Generator`` passed in, so the same generator state gives the same placement.

After ``i`` events have been applied (0-based), an event with ``n_new`` new latents gets the AR1*
quota ``h = min(lr_size // (i + 1), n_new)``, where ``lr_size`` is N_LR, the most LRs the
memory holds.

Fill phase (the memory has free slots): every new latent is stored while free slots remain, so
the memory is full as soon as the events have brought ``lr_size`` latents. The event stores
``k = max(h, min(free, n_new))`` latents: the first ``min(k, free)`` go to the free slots
(appended after the occupied ones, so slots ``0 .. occupied-1`` are always the occupied ones); if
the free slots run out inside the event, the rest of the quota (``k - free``) replaces random
occupied slots.
Once the memory is full, exactly ``h`` random new latents replace ``h`` distinct random slots.

Class-balanced mode makes the same number of moves but picks them greedily, one at a time: the
new latent is taken from the class with the fewest LRs (counting what is already placed), the
victim slot from the class with the most; ties are broken by a random order of the classes
drawn once per event. When every event brings new classes, this keeps the class counts within
one of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SlotPlacement", "ar1_quota", "ar1_writes", "plan_placement"]

I64 = npt.NDArray[np.int64]


def ar1_quota(lr_size: int, events_before: int, n_new: int) -> int:
    """AR1* quota ``h = min(lr_size // (events_before + 1), n_new)``."""
    if lr_size < 0 or events_before < 0 or n_new < 0:
        raise ValueError(
            f"lr_size ({lr_size}), events_before ({events_before}) and n_new ({n_new}) must be >= 0"
        )
    return min(lr_size // (events_before + 1), n_new)


def ar1_writes(lr_size: int, occupied: int, events_before: int, n_new: int) -> int:
    """New latents an event stores: the AR1* quota, or more while free slots remain."""
    return max(ar1_quota(lr_size, events_before, n_new), min(lr_size - occupied, n_new))


@dataclass(frozen=True, slots=True, eq=False)
class SlotPlacement:
    """Move ``new_index[j]`` (an index into the event's new latents) to slot ``slots[j]``.

    Slots ``>= occupied`` (the occupied count before the event) are appended, consecutively; the
    others replace stored LRs. Both arrays are int64 ``[k]``; ``slots`` are distinct.
    """

    new_index: I64
    slots: I64

    def __post_init__(self) -> None:
        if self.new_index.shape != self.slots.shape or self.slots.ndim != 1:
            raise ValueError(
                f"new_index {self.new_index.shape} and slots {self.slots.shape} must be [k] alike"
            )
        if len(np.unique(self.slots)) != len(self.slots):
            raise ValueError("slots of a placement must be distinct")

    def __len__(self) -> int:
        return len(self.slots)


def plan_placement(
    *,
    lr_size: int,
    events_before: int,
    slot_labels: npt.ArrayLike,
    new_labels: npt.ArrayLike,
    rng: np.random.Generator,
    class_balanced: bool = False,
) -> SlotPlacement:
    """Decide the AR1* moves of one event (see the module docstring).

    slot_labels: int ``[occupied]``, labels of the occupied slots ``0 .. occupied-1``;
    new_labels: int ``[n_new]``, labels of the event's new latents.
    """
    old = np.asarray(slot_labels, dtype=np.int64).reshape(-1)
    new = np.asarray(new_labels, dtype=np.int64).reshape(-1)
    occupied, n_new = len(old), len(new)
    if occupied > lr_size:
        raise ValueError(f"{occupied} occupied slots exceed lr_size {lr_size}")
    free = lr_size - occupied
    k = ar1_writes(lr_size, occupied, events_before, n_new)
    n_fill = min(k, free)
    n_replace = k - n_fill
    fill_slots = np.arange(occupied, occupied + n_fill, dtype=np.int64)
    if not class_balanced:
        new_index = rng.permutation(n_new)[:k].astype(np.int64)
        victims = rng.permutation(occupied)[:n_replace].astype(np.int64)
        return SlotPlacement(new_index, np.concatenate([fill_slots, victims]))
    return _balanced(old, new, k, n_fill, fill_slots, rng)


def _balanced(
    old: I64, new: I64, k: int, n_fill: int, fill_slots: I64, rng: np.random.Generator
) -> SlotPlacement:
    classes, inverse = np.unique(np.concatenate([old, new]), return_inverse=True)
    old_cls, new_cls = inverse[: len(old)], inverse[len(old) :]
    n_cls = len(classes)
    count = np.bincount(old_cls, minlength=n_cls).astype(np.int64)
    priority = rng.permutation(n_cls)  # tie-break order, drawn once per event
    # Per class: a random queue of candidate new latents and of victim slots.
    new_queues = _queues(new_cls, n_cls, rng)
    old_queues = _queues(old_cls, n_cls, rng)
    new_left = np.array([len(q) for q in new_queues], dtype=np.int64)
    old_left = np.array([len(q) for q in old_queues], dtype=np.int64)
    new_index = np.empty(k, dtype=np.int64)
    victims = np.empty(k - n_fill, dtype=np.int64)
    for j in range(k):
        c = _pick(np.where(new_left > 0, count, np.iinfo(np.int64).max), priority, lowest=True)
        new_left[c] -= 1
        new_index[j] = new_queues[c][new_left[c]]
        count[c] += 1
        if j >= n_fill:
            v = _pick(np.where(old_left > 0, count, -1), priority, lowest=False)
            old_left[v] -= 1
            victims[j - n_fill] = old_queues[v][old_left[v]]
            count[v] -= 1
    return SlotPlacement(new_index, np.concatenate([fill_slots, victims]))


def _queues(cls: npt.NDArray[np.intp], n_cls: int, rng: np.random.Generator) -> list[I64]:
    """For each class, the positions holding it, in random order."""
    order = rng.permutation(len(cls))
    shuffled = cls[order]
    return [order[shuffled == c].astype(np.int64) for c in range(n_cls)]


def _pick(values: I64, priority: npt.NDArray[np.int64], *, lowest: bool) -> int:
    best = values.min() if lowest else values.max()
    tied = np.flatnonzero(values == best)
    return int(tied[np.argmin(priority[tied])])
