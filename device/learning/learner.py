"""One learning event of the adaptive stage, AR1*-style (pure numpy: no I/O, no asyncio).

Per epoch, the new latents are shuffled and cut into the mini-batches of
:func:`device.learning.ar1.plan_event`; each mini-batch is topped up with replays drawn from the LR
memory (dequantized), then one SGD step is taken on softmax cross-entropy.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from device.learning.ar1 import EventPlan, plan_event
from device.learning.nn import SGD, Sequential, softmax_cross_entropy

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Sampler = Callable[[int, np.random.Generator], tuple[F32, I64]]
#: ``(k, rng, out) -> labels``: a :data:`Sampler` that dequantizes into ``out`` (float32
#: ``[k, *lr_shape]``), e.g. :meth:`device.learning.replay.ReplayMemory.sample_into`.
IntoSampler = Callable[[int, np.random.Generator, F32], I64]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Mini-batch composition and epochs of one event (paper defaults)."""

    epochs: int = 4
    mb_size: int = 128
    new_per_mb: int = 21

    def __post_init__(self) -> None:
        plan_event(1, 1, mb_size=self.mb_size, new_per_mb=self.new_per_mb, epochs=self.epochs)


@dataclass(frozen=True, slots=True)
class TrainResult:
    plan: EventPlan
    loss: float  # mean training loss of the last epoch


def train_event(
    head: Sequential,
    optimizer: SGD,
    latents: F32,
    labels: I64,
    *,
    replay: Sampler,
    n_replay: int,
    config: TrainConfig,
    rng: np.random.Generator,
    replay_into: IntoSampler | None = None,
) -> TrainResult:
    """Train ``head`` on ``latents [n, *lr_shape]`` mixed with replays; returns the plan it ran.

    ``replay(k, rng)`` draws ``k`` dequantized replays; ``n_replay`` is how many the memory holds.
    ``replay_into(k, rng, out)``, if given, is used instead for float32 latents: the same draws,
    dequantized straight into the mini-batch (no intermediate array, no concatenation).
    """
    plan = plan_event(
        len(latents),
        n_replay,
        mb_size=config.mb_size,
        new_per_mb=config.new_per_mb,
        epochs=config.epochs,
    )
    bounds = np.cumsum((0, *plan.new_sizes))
    into = replay_into if latents.dtype == np.float32 and latents.flags.c_contiguous else None
    losses: list[float] = []
    try:
        for _ in range(plan.epochs):
            order = rng.permutation(len(latents))
            losses = []
            for (start, stop), n_replays in zip(
                itertools.pairwise(bounds), plan.replay_sizes, strict=True
            ):
                idx = order[start:stop]
                if n_replays and into is not None:
                    x = np.empty((len(idx) + n_replays, *latents.shape[1:]), np.float32)
                    np.take(latents, idx, axis=0, out=x[: len(idx)])
                    ry = into(n_replays, rng, x[len(idx) :])
                    y = np.concatenate([labels[idx], ry])
                elif n_replays:
                    rx, ry = replay(n_replays, rng)
                    x = np.concatenate([latents[idx], rx])
                    y = np.concatenate([labels[idx], ry])
                else:
                    x, y = latents[idx], labels[idx]
                logits = head.forward(x, train=True)
                loss, grad = softmax_cross_entropy(logits, y)
                head.backward(grad)
                optimizer.step(head.params(), head.grads())
                losses.append(loss)
    finally:
        head.release()  # between events a node holds its weights, not its last activations
    return TrainResult(plan=plan, loss=float(np.mean(losses)) if losses else 0.0)


@dataclass(frozen=True, slots=True)
class Evaluation:
    accuracy: float
    per_class: dict[int, float]  # accuracy of each class present in the eval set


#: Samples one forward pass of an evaluation holds at most: the activations of a chunk, not of
#: the whole eval set, are allocated at once (each sample's prediction is its own, so the
#: result does not depend on it).
EVAL_CHUNK = 256


def evaluate(head: Sequential, latents: F32, labels: I64) -> Evaluation:
    """Top-1 accuracy of ``head`` on eval latents, overall and per class (predicted
    :data:`EVAL_CHUNK` samples at a time)."""
    if len(labels) == 0:
        raise ValueError("cannot evaluate on an empty eval set")
    hit = head.predict(latents, batch_size=EVAL_CHUNK) == labels
    # hits / samples per class in one pass each (the float64 mean of each class's hits)
    counts = np.bincount(labels)
    hits = np.bincount(labels, weights=hit)
    classes = np.flatnonzero(counts)
    per_class = {int(c): float(hits[c] / counts[c]) for c in classes}
    return Evaluation(accuracy=float(hit.mean()), per_class=per_class)


__all__ = [
    "EVAL_CHUNK",
    "Evaluation",
    "IntoSampler",
    "Sampler",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "train_event",
]
