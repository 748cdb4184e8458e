"""AR1*-style composition of a learning event into mini-batches (pure arithmetic, no I/O).

With ``n_new`` new latents, a replay memory holding ``n_replay`` latents, mini-batch size ``B``
and a target of ``new_per_mb`` new latents per mini-batch (the paper: 128 = 21 new + 107
replays), an event runs ``ceil(n_new / new_per_mb)`` mini-batches per epoch. The new latents are
spread over them evenly (sizes differ by at most one); every mini-batch is filled up to ``B``
with replays, as many as the memory holds. With an empty memory the mini-batches hold only new
latents, and there are ``ceil(n_new / B)`` of them (plain fine-tuning).

Both the node (to train) and the energy model (to charge the same work) use :func:`plan_event`,
so the telemetry and ``vega-emu energy`` agree by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventPlan:
    """How one learning event is cut into mini-batches."""

    n_new: int
    epochs: int
    new_sizes: tuple[int, ...]  # new latents in each mini-batch (same every epoch)
    replays_per_mb: int  # replays added to each mini-batch

    @property
    def minibatches(self) -> int:
        """Mini-batches per epoch."""
        return len(self.new_sizes)

    @property
    def samples_per_epoch(self) -> int:
        """Latents that go through the adaptive stage in one epoch (new + replays)."""
        return self.n_new + self.minibatches * self.replays_per_mb

    @property
    def samples_trained(self) -> int:
        """Forward + backward passes of the adaptive stage over the whole event."""
        return self.epochs * self.samples_per_epoch


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
        return EventPlan(n_new=0, epochs=epochs, new_sizes=(), replays_per_mb=0)
    per_mb = new_per_mb if n_replay > 0 else mb_size
    n_mb = math.ceil(n_new / per_mb)
    base, extra = divmod(n_new, n_mb)
    sizes = tuple(base + 1 if i < extra else base for i in range(n_mb))
    replays = min(mb_size - sizes[0], n_replay) if n_replay > 0 else 0
    return EventPlan(n_new=n_new, epochs=epochs, new_sizes=sizes, replays_per_mb=max(replays, 0))


__all__ = ["EventPlan", "plan_event"]
