"""Inference on a node, the pure part: classify latents, and the node's inference counters.

:func:`classify` runs the adaptive stage forward (no training caches, no weight change) and
returns each sample's class and confidence (the softmax maximum). :class:`InferenceCounters` is
what a node commits about its inferences (a row of its state file). No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from device.learning.nn import Sequential

#: Charged inference requests whose seqs a node keeps (a repeat among them is not charged).
SEQ_WINDOW: Final = 256
#: Wall seconds after which an inference commit also flushes the log to disk (fsync).
SYNC_EVERY_S: Final = 10.0


def classify(
    head: Sequential, latents: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """``(classes int64 [N], confidence float64 [N])`` of ``latents [N, *lr_shape]``.

    The forward pass runs with ``train=False``: no activation is kept and nothing changes.
    """
    logits = head.forward(latents, train=False).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    prob /= prob.sum(axis=1, keepdims=True)
    classes = prob.argmax(axis=1)
    confidence = np.clip(prob[np.arange(len(prob)), classes], 0.0, 1.0)
    return classes.astype(np.int64), confidence


@dataclass(frozen=True, slots=True)
class InferenceCounters:
    """A node's inference counters, committed with each inference and each event.

    ``count`` / ``energy_j``: requests charged and their energy, since the node started;
    ``since_*``: the same since the last telemetry, and the emulated time spent classifying;
    ``preq_right`` of ``preq_n``: prequential scores (cumulative).
    """

    count: int = 0
    energy_j: float = 0.0
    since_count: int = 0
    since_energy_j: float = 0.0
    since_latency_s: float = 0.0
    preq_right: int = 0
    preq_n: int = 0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"inference counter {item.name} must be a number >= 0: {value!r}")
        if self.preq_right > self.preq_n:
            raise ValueError(f"preq_right {self.preq_right} > preq_n {self.preq_n}")

    def charged(self, energy_j: float, latency_s: float) -> InferenceCounters:
        """After one more request charged ``energy_j`` over ``latency_s``."""
        return InferenceCounters(
            count=self.count + 1,
            energy_j=self.energy_j + energy_j,
            since_count=self.since_count + 1,
            since_energy_j=self.since_energy_j + energy_j,
            since_latency_s=self.since_latency_s + latency_s,
            preq_right=self.preq_right,
            preq_n=self.preq_n,
        )

    def reported(self, right: int, n: int) -> InferenceCounters:
        """After a telemetry (the ``since_*`` start again) that scored ``right`` of ``n``."""
        return InferenceCounters(
            count=self.count,
            energy_j=self.energy_j,
            preq_right=self.preq_right + right,
            preq_n=self.preq_n + n,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InferenceCounters:
        known = {item.name for item in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


__all__ = ["SEQ_WINDOW", "SYNC_EVERY_S", "InferenceCounters", "classify"]
