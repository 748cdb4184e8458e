"""AR1*-style composition of a learning event into mini-batches (pure arithmetic, no I/O).

With ``n_new`` new latents, a replay memory holding ``n_replay`` latents, mini-batch size ``B``
and ``new_per_mb`` new latents per mini-batch (the paper: 128 = 21 new + 107 replays), an epoch
runs ``M = floor(n_new / new_per_mb)`` mini-batches (at least one, and at least
``ceil(n_new / B)`` so that no mini-batch holds more than ``B`` new latents), as AR1*'s
reference code does (``it_x_ep = n_new // cur_sz``). With the paper's event (300 new, 1500 LRs,
B = 128, 21 new) that is 14 = ``floor((n_new + n_LR) / B)`` mini-batches: docs/energy-model.md
shows that the paper's measured latencies imply exactly 14 x 128 latents per epoch. The new
latents are spread over the mini-batches evenly (sizes differ by at most one, so none is
dropped) and every mini-batch is filled up to ``B`` with replays, as many as the memory holds.
With an empty memory the mini-batches hold only new latents, and there are ``ceil(n_new / B)``
of them (plain fine-tuning).

Both the node (to train) and the energy model (to charge the same work) use :func:`plan_event`,
so the telemetry and ``vega-emu energy`` agree by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventPlan:
    """How one learning event is cut into mini-batches (the same cut every epoch)."""

    n_new: int
    epochs: int
    new_sizes: tuple[int, ...]  # new latents in each mini-batch
    replay_sizes: tuple[int, ...]  # replays added to each mini-batch

    def __post_init__(self) -> None:
        if len(self.new_sizes) != len(self.replay_sizes):
            raise ValueError(
                f"new_sizes ({len(self.new_sizes)}) and replay_sizes "
                f"({len(self.replay_sizes)}) must have one entry per mini-batch"
            )
        if sum(self.new_sizes) != self.n_new:
            raise ValueError(f"new_sizes sum to {sum(self.new_sizes)}, not n_new={self.n_new}")

    @property
    def minibatches(self) -> int:
        """Mini-batches per epoch."""
        return len(self.new_sizes)

    @property
    def replays_per_mb(self) -> int:
        """The most replays one mini-batch holds (mini-batches differ by at most one; use
        ``replay_sizes`` for the exact count of each)."""
        return max(self.replay_sizes, default=0)

    @property
    def replays_per_epoch(self) -> int:
        """Replays drawn from the LR memory in one epoch."""
        return sum(self.replay_sizes)

    @property
    def samples_per_epoch(self) -> int:
        """Latents that go through the adaptive stage in one epoch (new + replays)."""
        return self.n_new + self.replays_per_epoch

    @property
    def samples_trained(self) -> int:
        """Forward + backward passes of the adaptive stage over the whole event."""
        return self.epochs * self.samples_per_epoch

    def describe(self) -> str:
        """``"21-22 new + 106-107 replays"``: the range of one mini-batch's content."""

        def span(sizes: tuple[int, ...]) -> str:
            low, high = min(sizes, default=0), max(sizes, default=0)
            return f"{low}" if low == high else f"{low}-{high}"

        return f"{span(self.new_sizes)} new + {span(self.replay_sizes)} replays"


def plan_event(
    n_new: int,
    n_replay: int,
    *,
    mb_size: int = 128,
    new_per_mb: int = 21,
    epochs: int = 4,
) -> EventPlan:
    """Cut an event of ``n_new`` new latents, ``n_replay`` replays stored, into mini-batches."""
    if n_new < 0 or n_replay < 0:
        raise ValueError(f"n_new ({n_new}) and n_replay ({n_replay}) must be >= 0")
    if mb_size < 1:
        raise ValueError(f"mini-batch size must be >= 1, got {mb_size}")
    if not 1 <= new_per_mb <= mb_size:
        raise ValueError(
            f"new_per_mb must be in 1..{mb_size} (the mini-batch size), got {new_per_mb}"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if n_new == 0:
        return EventPlan(n_new=0, epochs=epochs, new_sizes=(), replay_sizes=())
    if n_replay > 0:
        n_mb = max(n_new // new_per_mb, math.ceil(n_new / mb_size), 1)
    else:
        n_mb = math.ceil(n_new / mb_size)
    base, extra = divmod(n_new, n_mb)
    sizes = tuple(base + 1 if i < extra else base for i in range(n_mb))
    replays = tuple(min(mb_size - size, n_replay) for size in sizes)
    return EventPlan(n_new=n_new, epochs=epochs, new_sizes=sizes, replay_sizes=replays)


__all__ = ["EventPlan", "plan_event"]
