"""Factory replays: the quantized latents a replay memory starts from (pure numpy).

AR1* fills the latent-replay memory with latents of the initial (factory) training batch before
the first learning event, so that the first events train the head on the new classes *and* on
replays of the classes the factory model knows. A bundle carries such a set
(:mod:`device.model.replays`); a node fits it to its own memory with :meth:`FactoryReplays.fit`:

- **size**: a class-balanced subset (:func:`balanced_pick`) when the node holds fewer LRs than
  the set, all of them otherwise (the rest of the memory fills from the first events);
- **bits**: dequantized and quantized again at the node's bits (:func:`requantize`); below the
  set's bits that is the node's own per-LR quantization of the stored values, above them (FP32
  from an 8-bit set) the values stay the set's, stored losslessly at the wider width.

Class-balanced means as equal as the data allows: each class gets ``min(available, level)``
latents with the largest ``level`` that fits the size, and the slots left over by the rounding
go one each to the classes with the most latents left (ties in a random order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from device.learning.replay.errors import QuantizationError
from device.learning.replay.quant import QuantizedLR, dequantize, quantize

__all__ = ["FactoryReplays", "balanced_counts", "balanced_pick", "requantize"]

I64 = npt.NDArray[np.int64]


def balanced_counts(available: npt.ArrayLike, size: int, rng: np.random.Generator) -> I64:
    """How many of each class to keep: int64 ``[C]``, summing to ``min(size, sum(available))``.

    ``available``: int ``[C]``, the latents of each class. Each class gets
    ``min(available[c], level)`` for the largest ``level`` that fits ``size``; the slots left over
    go one each to classes that still have latents, in a random order.
    """
    avail = np.asarray(available, dtype=np.int64).reshape(-1)
    if size < 0 or (avail < 0).any():
        raise ValueError(f"size ({size}) and available counts {avail.tolist()} must be >= 0")
    total = min(size, int(avail.sum()))
    level = 0
    # the largest level whose capped sum still fits: the sum grows with the level
    low, high = 0, int(avail.max(initial=0))
    while low <= high:
        mid = (low + high) // 2
        if int(np.minimum(avail, mid).sum()) <= total:
            level, low = mid, mid + 1
        else:
            high = mid - 1
    counts = np.minimum(avail, level)
    extra = total - int(counts.sum())
    if extra:
        room = np.flatnonzero(avail > counts)
        counts[rng.permutation(room)[:extra]] += 1
    return counts


def balanced_pick(labels: npt.ArrayLike, size: int, rng: np.random.Generator) -> I64:
    """Indices (int64, sorted) of a class-balanced subset of at most ``size`` of ``labels``."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    classes, inverse = np.unique(y, return_inverse=True)
    counts = balanced_counts(np.bincount(inverse, minlength=len(classes)), size, rng)
    chosen = [
        rng.permutation(np.flatnonzero(inverse == c))[:n] for c, n in enumerate(counts.tolist())
    ]
    return np.sort(np.concatenate([np.zeros(0, np.int64), *chosen]).astype(np.int64))


def requantize(lrs: QuantizedLR, bits: int) -> QuantizedLR:
    """``lrs`` stored at ``bits`` instead: the same LRs if the bits agree, else their dequantized
    values quantized again (per LR, as :func:`~device.learning.replay.quant.quantize` does)."""
    if bits == lrs.bits:
        return lrs
    return quantize(dequantize(lrs), bits)


@dataclass(frozen=True, slots=True, eq=False)
class FactoryReplays:
    """Quantized factory latents: ``lrs`` (``N`` LRs of ``prod(shape)`` values) and their int64
    ``labels [N]``; ``shape`` is one latent's shape (the bundle's LR tensor)."""

    lrs: QuantizedLR
    labels: I64
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.labels, np.ndarray) or self.labels.dtype != np.int64:
            raise QuantizationError(f"labels must be an int64 array, got {self.labels!r:.80}")
        if self.labels.shape != (len(self.lrs),):
            raise QuantizationError(
                f"labels must be [{len(self.lrs)}] (one per LR), got {self.labels.shape}"
            )
        if (self.labels < 0).any():
            raise QuantizationError("labels must be >= 0")
        if int(np.prod(self.shape)) != self.lrs.dim:
            raise QuantizationError(
                f"latent shape {self.shape} does not hold the {self.lrs.dim} values of an LR"
            )

    def __len__(self) -> int:
        return len(self.lrs)

    @property
    def bits(self) -> int:
        return self.lrs.bits

    def class_counts(self) -> dict[int, int]:
        """LRs per label."""
        labels, counts = np.unique(self.labels, return_counts=True)
        return {int(c): int(n) for c, n in zip(labels, counts, strict=True)}

    def fit(self, lr_size: int, bits: int, rng: np.random.Generator) -> FactoryReplays:
        """The set as a memory of ``lr_size`` LRs at ``bits`` holds it: a class-balanced subset
        of at most ``lr_size`` (all of it when it fits, in its own order), quantized at
        ``bits`` (see the module docstring)."""
        if len(self) > lr_size:
            keep = balanced_pick(self.labels, lr_size, rng)
            picked = FactoryReplays(self.lrs.take(keep), self.labels[keep], self.shape)
        else:
            picked = self
        return FactoryReplays(requantize(picked.lrs, bits), picked.labels, self.shape)
