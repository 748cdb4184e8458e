"""What became of the batches a producer published, told the same way by ``stream``, ``bridge``
and ``up``: :class:`Delivery`, its summary line, the line naming what got no answer, and the
exit status that says so.

Every batch published is counted once, by its node's first answer: ``learned`` (telemetry),
``duplicates`` (an ``error`` ``duplicate``: the node had learned it before, e.g. its telemetry
was lost and the batch published again), ``refused`` (any other ``error`` naming the seq),
``lost`` (skipped in a ``gap``: the node gave it up before it arrived), ``skipped`` (an
``error`` ``energy_policy``: the node's energy-aware policy chose not to learn it -- neither
learned nor a failure), ``deferred`` (an ``error`` ``deferred``: the node holds it for the
sun; its telemetry, or an ``energy_policy`` drop, moves it to ``learned`` or ``skipped`` when
it comes: what is still held at the end is "deferred (not learned yet)"), or ``unanswered``
(no answer by the end of the drain). A batch never
published (a closed loop whose device stopped answering) is ``unsent``. Only ``unanswered``
and ``unsent`` batches make a run incomplete: refusals, gaps and policy skips are the node's
answers, told in the summary line. A complete run that sent
batches of which none was learned (every one a duplicate, refused or lost) taught the fleet
nothing: that is said too, with an exit status of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

#: Exit status of ``stream`` and ``bridge`` when a batch got no answer from its node (or was
#: never sent): distinct from 1 (an error: no broker) and 2 (bad options).
UNANSWERED_EXIT_STATUS: Final = 3
#: Exit status of ``stream`` and ``bridge`` when the fleet learned nothing from the run: nothing
#: was sent (what it would send was learned before, or the scenario has no events left), or
#: every batch sent was answered without being learned (duplicates, refusals, gaps).
NOTHING_LEARNED_EXIT_STATUS: Final = 4
#: The shortest default drain, seconds.
MIN_DRAIN_S: Final = 10.0
#: The default drain, in cadences of the producer (events of a device, or bridge windows).
DRAIN_CADENCES: Final = 3.0
#: Devices (and seq ranges per device) named in the unanswered line before the rest is counted.
NAMED_DEVICES: Final = 5
NAMED_RANGES: Final = 6


def default_drain_s(cadence_s: float, speed: float | None = 1.0) -> float:
    """How long a producer waits, at its end, for the answers still outstanding: three of its
    cadences in wall time (``cadence_s / speed``), at least :data:`MIN_DRAIN_S` (a closed loop,
    ``speed`` None, waits the minimum: it already waited for each answer). A node that keeps
    up answers within a cadence; three leave room for a node a little behind and for a re-send
    or two (the first comes a cadence, at least 5 s, after a publish without an answer)."""
    if speed is None:
        return MIN_DRAIN_S
    return max(MIN_DRAIN_S, DRAIN_CADENCES * cadence_s / speed)


def seq_ranges(seqs: Iterable[int], limit: int | None = None) -> str:
    """``17-19, 22``: sorted seqs as ranges; past ``limit`` ranges, ``(+N more)`` seqs."""
    ordered = sorted(set(seqs))
    runs: list[tuple[int, int]] = []
    for seq in ordered:
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    shown = runs if limit is None else runs[:limit]
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in shown)
    rest = sum(b - a + 1 for a, b in runs[len(shown) :])
    return f"{text} (+{rest} more)" if rest else text


def answers_text(
    *,
    sent: int,
    learned: int,
    duplicates: int,
    refused: int,
    lost: int,
    unanswered: int,
    skipped: int = 0,
    deferred: int = 0,
) -> str:
    """``answered 178 of 180 batches: 170 learned, 8 duplicate, 0 refused, 0 lost in gaps;
    2 unanswered`` -- what the nodes answered, nothing left out (``, N skipped by the energy
    policy`` when a node's policy skipped some, ``, N deferred (not learned yet)`` when a node
    still holds some for the sun)."""
    answered = learned + duplicates + refused + lost + skipped + deferred
    text = (
        f"answered {answered} of {sent} batch(es): {learned} learned, {duplicates} duplicate "
        f"(learned before), {refused} refused, {lost} lost in gaps"
    )
    if skipped:
        text += f", {skipped} skipped by the energy policy"
    if deferred:
        text += f", {deferred} deferred (not learned yet)"
    return f"{text}; {unanswered} unanswered" if unanswered else text


@dataclass(frozen=True, slots=True)
class Delivery:
    """The batches a producer meant to send (``planned``) and what became of them; see the
    module docstring. ``unanswered`` and ``unsent``: seqs by device."""

    planned: int
    sent: int
    learned: int = 0
    duplicates: int = 0
    refused: int = 0
    lost: int = 0
    unanswered: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    unsent: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    skipped: int = 0
    deferred: int = 0

    def __post_init__(self) -> None:
        counts = (
            self.planned,
            self.sent,
            self.learned,
            self.duplicates,
            self.refused,
            self.lost,
            self.skipped,
            self.deferred,
        )
        if min(counts) < 0:
            raise ValueError(f"counts must be >= 0, got {counts}")
        if self.answered + self.unanswered_count != self.sent:
            raise ValueError(
                f"{self.sent} sent but {self.answered} answered and {self.unanswered_count} "
                "unanswered"
            )
        if self.sent + self.unsent_count != self.planned:
            raise ValueError(
                f"{self.planned} planned but {self.sent} sent and {self.unsent_count} unsent"
            )

    @property
    def answered(self) -> int:
        return (
            self.learned + self.duplicates + self.refused + self.lost + self.skipped + self.deferred
        )

    @property
    def unanswered_count(self) -> int:
        return sum(map(len, self.unanswered.values()))

    @property
    def unsent_count(self) -> int:
        return sum(map(len, self.unsent.values()))

    @property
    def complete(self) -> bool:
        """Every planned batch was sent and answered by its node."""
        return not self.unanswered_count and not self.unsent_count

    @property
    def nothing_learned(self) -> bool:
        """Every batch was answered, some were sent, and none of them was learned (nor is
        still held for the sun: those are yet to be learned)."""
        return self.complete and self.sent > 0 and self.learned == 0 and self.deferred == 0

    @property
    def exit_status(self) -> int:
        """:data:`UNANSWERED_EXIT_STATUS` when not :attr:`complete`,
        :data:`NOTHING_LEARNED_EXIT_STATUS` when :attr:`nothing_learned`, else 0."""
        if not self.complete:
            return UNANSWERED_EXIT_STATUS
        return NOTHING_LEARNED_EXIT_STATUS if self.nothing_learned else 0

    def failure_line(self) -> str:
        """The line that goes with a non-zero :attr:`exit_status` (empty with 0): the batches
        without an answer (:meth:`missing_line`), or that none of those sent was learned."""
        if not self.complete:
            return self.missing_line()
        if not self.nothing_learned:
            return ""
        return (
            f"none of the {self.sent} batch(es) sent was learned: {self.duplicates} duplicate "
            f"(learned before), {self.refused} refused, {self.lost} lost in gaps"
            + (f", {self.skipped} skipped by the energy policy" if self.skipped else "")
        )

    def summary_line(self) -> str:
        """What the nodes answered (see :func:`answers_text`), and what was never sent."""
        text = answers_text(
            sent=self.sent,
            learned=self.learned,
            duplicates=self.duplicates,
            refused=self.refused,
            lost=self.lost,
            unanswered=self.unanswered_count,
            skipped=self.skipped,
            deferred=self.deferred,
        )
        return f"{text}; {self.unsent_count} never sent" if self.unsent_count else text

    def missing_line(self, devices: int = NAMED_DEVICES, ranges: int = NAMED_RANGES) -> str:
        """One line naming the devices and seqs without an answer (``node-0003: 17-19, 22``),
        the first ``devices`` devices only (``(+N more devices)``); empty when complete."""
        if self.complete:
            return ""
        names = sorted(set(self.unanswered) | set(self.unsent))
        parts = []
        for device in names[:devices]:
            said = []
            if self.unanswered.get(device):
                said.append(seq_ranges(self.unanswered[device], ranges))
            if self.unsent.get(device):
                said.append(f"never sent {seq_ranges(self.unsent[device], ranges)}")
            parts.append(f"{device}: {', '.join(said)}")
        more = len(names) - devices
        text = "; ".join(parts) + (f" (+{more} more devices)" if more > 0 else "")
        head = f"{self.unanswered_count} batch(es) got no answer from their node"
        if self.unsent_count:
            head += f" and {self.unsent_count} were never sent"
        return f"{head}: {text}"

    def to_dict(self) -> dict[str, Any]:
        skipped = {"skipped": self.skipped} if self.skipped else {}
        skipped |= {"deferred": self.deferred} if self.deferred else {}
        return skipped | {
            "planned": self.planned,
            "sent": self.sent,
            "learned": self.learned,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "lost": self.lost,
            "unanswered": {d: list(s) for d, s in sorted(self.unanswered.items()) if s},
            "unsent": {d: list(s) for d, s in sorted(self.unsent.items()) if s},
            "complete": self.complete,
        }


def finite_drain(value: float) -> bool:
    """Whether ``value`` is a usable drain timeout: a finite number >= 0."""
    return math.isfinite(value) and value >= 0


__all__ = [
    "DRAIN_CADENCES",
    "MIN_DRAIN_S",
    "NAMED_DEVICES",
    "NAMED_RANGES",
    "NOTHING_LEARNED_EXIT_STATUS",
    "UNANSWERED_EXIT_STATUS",
    "Delivery",
    "answers_text",
    "default_drain_s",
    "finite_drain",
    "seq_ranges",
]
